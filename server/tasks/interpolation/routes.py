"""``POST /v1/interpolate``: one pair in, its in-between frames out, for editors. The pair
runs as a stream of two frames through the task's one step (``step.py``)."""

from __future__ import annotations

import asyncio
import io
import secrets
import zipfile
from collections import Counter
from typing import Annotated, Any, Literal

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
Output = Literal["multipart", "zip"]
ZIP_FILENAME = "interpolated.zip"
NAME_DECIMALS = 6  # why: t0.250000; more only where six cannot tell two asked timesteps apart
# why 17: steps of 1e-17 are finer than the gap between two floats near 1 (2**-53), so only
# timesteps closer than that share a name (and a -2)
MOST_DECIMALS = 17
DESCRIPTION = """One pair of frames in, its in-between frames out, at the `timesteps` asked for
(`0.25,0.5`, `[0.25, 0.5]` or repeated fields, each in (0, 1), in any order) or at `i/factor`
(default: the middle frame, 0.5). Both frames must have the same size.

What comes back, by `output`:
- not given: one timestep answers the image itself (`output_format`), several answer
  `multipart/mixed`, one part per timestep in the order asked, each with `X-Timestep` and
  `X-Scene-Change` headers;
- `multipart`: always `multipart/mixed`, even for one timestep;
- `zip`: `application/zip` (`Content-Disposition: attachment; filename="interpolated.zip"`),
  one image per timestep in the order asked, named by its timestep (`t0.250000.png`; more
  decimals where six cannot tell two apart, `-2` on a timestep asked twice), and
  `X-Scene-Change` on the answer.

At a scene cut (thumbnail SSIM below `scene_change_threshold`; `none` turns detection off)
every in-between frame is a copy of `frame0` and `X-Scene-Change` is `true`.

Errors worth knowing: 400 for bytes that are not an image; 413 for a frame over
`VIDSERVE_MAX_PIXELS` or in-between frames over `VIDSERVE_MAX_OUTPUT_PIXELS`; 422 for
frames of different sizes, a timestep outside (0, 1), `timesteps` and `factor` together,
a `scale` or `output` not listed, or more timesteps than the engine queue holds; 503
while the model loads."""


@router.post(
    "/interpolate",
    summary="Interpolate between two frames",
    description=DESCRIPTION,
    response_class=Response,
    responses={
        200: {
            "description": "one timestep: the image itself; several, or output=multipart: "
            "multipart/mixed, one part per timestep in the order given, each with an X-Timestep "
            "header; output=zip: a zip of one image per timestep, named by it",
            "content": {
                "image/png": {},
                "image/jpeg": {},
                "image/webp": {},
                "multipart/mixed": {},
                "application/zip": {},
            },
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
    output: Annotated[
        Output | None, Form(description="multipart or zip (default: the image for one timestep)")
    ] = None,
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
    if output == "zip":
        return await asyncio.to_thread(zip_answer, results, encoded, output_format)
    if len(results) == 1 and output is None:
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


def entry_names(timesteps: list[float], fmt: ImageFormat) -> list[str]:
    """A file name per timestep, in order: ``t0.250000.png``, with one number of decimals for
    all (so the names sort by time), more than six only where six cannot tell two distinct
    timesteps apart; a timestep asked twice gets ``-2``, ``-3``."""
    decimals = _decimals(timesteps)
    names: list[str] = []
    taken: Counter[str] = Counter()
    for timestep in timesteps:
        stem = f"t{timestep:.{decimals}f}"
        taken[stem] += 1
        names.append(f"{stem}.{fmt}" if taken[stem] == 1 else f"{stem}-{taken[stem]}.{fmt}")
    return names


def _decimals(timesteps: list[float]) -> int:
    """The fewest decimals, six at least, that tell every two distinct timesteps apart."""
    distinct = set(timesteps)
    for decimals in range(NAME_DECIMALS, MOST_DECIMALS):
        if len({f"{t:.{decimals}f}" for t in distinct}) == len(distinct):
            return decimals
    return MOST_DECIMALS


def zip_answer(results: list[Interpolated], encoded: list[bytes], fmt: ImageFormat) -> Response:
    """A zip of one image per timestep, named by it, in the order asked."""
    body = io.BytesIO()
    names = entry_names([r.timestep for r in results], fmt)
    # why stored: PNG, JPEG and WebP are compressed already; deflating them again gains nothing
    with zipfile.ZipFile(body, "w", zipfile.ZIP_STORED) as archive:
        for name, data in zip(names, encoded, strict=True):
            archive.writestr(name, data)
    headers = {
        "Content-Disposition": f'attachment; filename="{ZIP_FILENAME}"',
        "X-Scene-Change": str(any(r.scene_change for r in results)).lower(),
    }
    return Response(body.getvalue(), media_type="application/zip", headers=headers)
