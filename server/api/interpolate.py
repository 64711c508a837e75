"""``POST /v1/interpolate``: one pair in, its in-between frames out, for editors."""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import Response

from models.rife.inference import InterpolationInputError, check_timesteps, timesteps_for_factor
from models.rife.scene import DEFAULT_SCENE_CHANGE_THRESHOLD
from server.api.deps import State, read_upload
from server.media import MEDIA_TYPES, ImageFormat, decode_image, encode_image
from server.state import ServerState
from server.tasks.interpolation import Interpolated, InterpolationService

router = APIRouter(prefix="/v1", tags=["interpolation"])


def parse_timesteps(values: list[str] | None, factor: int | None) -> list[float]:
    """Timesteps from repeated fields, "0.25,0.5", or "[0.25, 0.5]"; else from ``factor``
    (default 2: the middle frame). Both at once is an error."""
    given = [v for v in values or [] if v.strip()]
    if given and factor is not None:
        raise InterpolationInputError("give timesteps or factor, not both")
    if not given:
        return timesteps_for_factor(2 if factor is None else factor)
    timesteps: list[float] = []
    for value in given:
        text = value.strip()
        try:
            parsed = json.loads(text) if text.startswith("[") else [float(t) for t in text.split(",")]
            timesteps.extend(float(t) for t in parsed)
        except (ValueError, TypeError, RecursionError) as exc:
            raise InterpolationInputError(f"timesteps must be numbers in (0, 1), got {value!r}") from exc
    check_timesteps(timesteps)
    return timesteps


def parse_threshold(value: str | None) -> float | None:
    """ "none" or "off" turns scene detection off; otherwise an SSIM threshold in [0, 1]."""
    if value is None or value.strip() == "":
        return DEFAULT_SCENE_CHANGE_THRESHOLD
    if value.strip().lower() in ("none", "off"):
        return None
    try:
        threshold = float(value)
    except ValueError:
        threshold = -1.0
    if not 0.0 <= threshold <= 1.0:
        raise InterpolationInputError(f"scene_change_threshold must be in [0, 1] or 'none', got {value!r}")
    return threshold


@router.post(
    "/interpolate",
    summary="Interpolate between two frames",
    response_class=Response,
    responses={
        200: {
            "description": "one timestep: the image itself; several: multipart/mixed, one part per "
            "timestep in the order given, each with an X-Timestep header",
            "content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}, "multipart/mixed": {}},
        }
    },
)
async def interpolate(
    state: State,
    frame0: Annotated[UploadFile, File(description="earlier frame: PNG, JPEG or WebP")],
    frame1: Annotated[UploadFile, File(description="later frame, same size")],
    timesteps: Annotated[list[str] | None, Form(description="positions in (0, 1)")] = None,
    factor: Annotated[int | None, Form(ge=2, le=64, description="N× frame rate: timesteps i/N")] = None,
    scale: Annotated[float, Form(description="flow scale: 1.0 up to 1080p, 0.5 for 4K")] = 1.0,
    model: Annotated[str | None, Form(description="served model (default: the first)")] = None,
    output_format: Annotated[ImageFormat, Form(description="png, jpeg or webp")] = "png",
    scene_change_threshold: Annotated[str | None, Form(description="SSIM cut threshold or 'none'")] = None,
) -> Response:
    service = state.interpolation_service(model)
    steps = parse_timesteps(timesteps, factor)
    threshold = parse_threshold(scene_change_threshold)
    owner = "req-" + secrets.token_hex(6)
    with state.announce(service.engine.model, owner):
        results = await _run(state, service, owner, frame0, frame1, steps, scale, threshold)
    encoded = await asyncio.to_thread(lambda: [encode_image(r.frame, output_format) for r in results])
    if len(results) == 1:
        return Response(encoded[0], media_type=MEDIA_TYPES[output_format], headers=_part_headers(results[0]))
    return multipart_mixed(results, encoded, output_format)


async def _run(
    state: ServerState,
    service: InterpolationService,
    owner: str,
    frame0: UploadFile,
    frame1: UploadFile,
    steps: list[float],
    scale: float,
    threshold: float | None,
) -> list[Interpolated]:
    limit = state.settings.max_pixels
    data0, data1 = await read_upload(state, frame0, "frame0"), await read_upload(state, frame1, "frame1")
    pixels0 = await asyncio.to_thread(decode_image, data0, limit)
    pixels1 = await asyncio.to_thread(decode_image, data1, limit)
    if pixels0.shape != pixels1.shape:
        raise InterpolationInputError(f"frame sizes differ: {pixels0.shape[:2]} and {pixels1.shape[:2]}")
    prepared0 = await asyncio.to_thread(service.prepare, pixels0, scale)
    prepared1 = await asyncio.to_thread(service.prepare, pixels1, scale)
    return await service.interpolate(owner, prepared0, prepared1, steps, threshold)


def _part_headers(result: Interpolated) -> dict[str, str]:
    return {"X-Timestep": f"{result.timestep:g}", "X-Scene-Change": str(result.scene_change).lower()}


def multipart_mixed(results: list[Interpolated], encoded: list[bytes], fmt: ImageFormat) -> Response:
    """RFC 2046 multipart/mixed: one part per timestep, in order."""
    boundary = "vidserve-" + secrets.token_hex(12)
    body = bytearray()
    for index, (result, data) in enumerate(zip(results, encoded, strict=True)):
        headers = {
            "Content-Type": MEDIA_TYPES[fmt],
            "Content-Disposition": f'inline; name="frame"; filename="frame-{index}.{fmt}"',
            "Content-Length": str(len(data)),
            **_part_headers(result),
        }
        body += f"--{boundary}\r\n".encode()
        body += "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode() + b"\r\n"
        body += data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return Response(bytes(body), media_type=f"multipart/mixed; boundary={boundary}")
