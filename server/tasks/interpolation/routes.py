"""``POST /v1/interpolate``: one pair in, its in-between frames out, for editors. The pair
runs as a stream of two frames through the task's one step (``step.py``)."""

from __future__ import annotations

import asyncio
import secrets
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import Response

from models.rife.inference import InterpolationInputError, check_scale
from models.rife.spec import SCALES
from server.api.deps import State, read_upload
from server.media import MEDIA_TYPES, ImageFormat, decode_image, encode_image
from server.sessions.store import new_core
from server.state import ServerState
from server.tasks.interpolation.forms import parse_threshold, parse_timesteps
from server.tasks.interpolation.service import Interpolated, InterpolationService
from server.tasks.interpolation.session import TASK, InterpolationSession
from server.tasks.interpolation.step import step

router = APIRouter(prefix="/v1", tags=["interpolation"])
SCALE_ENUM: dict[str, Any] = {"enum": list(SCALES)}


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
    scale: Annotated[
        float,
        Form(description="flow scale: 1.0 up to 1080p, 0.5 for 4K", json_schema_extra={"enum": list(SCALES)}),
    ] = 1.0,
    model: Annotated[str | None, Form(description="served model (default: the first)")] = None,
    output_format: Annotated[ImageFormat, Form(description="png, jpeg or webp")] = "png",
    scene_change_threshold: Annotated[str | None, Form(description="SSIM cut threshold or 'none'")] = None,
) -> Response:
    service = state.service(model, state.task_named(TASK))
    assert isinstance(service, InterpolationService)
    check_scale(scale)
    pair = InterpolationSession(
        core=new_core("req-"),
        model=service.model,
        timesteps=parse_timesteps(timesteps, factor),
        scale=scale,
        scene_change_threshold=parse_threshold(scene_change_threshold),
    )
    with state.announce(service.model, pair.id):
        results = await _run(state, service, pair, frame0, frame1)
    encoded = await asyncio.to_thread(lambda: [encode_image(r.frame, output_format) for r in results])
    if len(results) == 1:
        return Response(encoded[0], media_type=MEDIA_TYPES[output_format], headers=_part_headers(results[0]))
    return multipart_mixed(results, encoded, output_format)


async def _run(
    state: ServerState,
    service: InterpolationService,
    pair: InterpolationSession,
    frame0: UploadFile,
    frame1: UploadFile,
) -> list[Interpolated]:
    limit = state.settings.max_pixels
    data0, data1 = await read_upload(state, frame0, "frame0"), await read_upload(state, frame1, "frame1")
    pixels0 = await asyncio.to_thread(decode_image, data0, limit)
    pixels1 = await asyncio.to_thread(decode_image, data1, limit)
    if pixels0.shape != pixels1.shape:
        raise InterpolationInputError(f"frame sizes differ: {pixels0.shape[:2]} and {pixels1.shape[:2]}")
    most = state.settings.max_output_pixels
    await step(service, pair, pixels0, most)
    return await step(service, pair, pixels1, most)


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
