"""The one per-frame step of the clip encoder, shared by the websocket stream, ``POST
/v1/clips`` and clip jobs: a stream's next frame in, the window it completes (if any) out."""

from __future__ import annotations

import numpy as np

from models.videomae.inference import ClipInputError, ClipState, Window
from server.scheduler import Priority
from server.sessions.store import SessionCore
from server.tasks.embed.service import EmbedService
from server.tasks.embed.session import EmbedSession, WindowFields


async def step(
    service: EmbedService,
    session: EmbedSession,
    pixels: np.ndarray,
    index: int,
    pts: float | None,
    priority: Priority = Priority.LIVE,
) -> Window | None:
    """pixels: the session's next frame, uint8 H×W×3 → the window it completes, or None.

    Every frame of a session has the first one's size (a window mixes no sizes). A frame
    refused (a full queue, bad input) leaves the session as it was."""
    if session.size is not None and pixels.shape[:2] != session.size:
        raise ClipInputError(
            "size_mismatch", f"frame {index} is {pixels.shape[1]}×{pixels.shape[0]}, the clip's frames "
            f"are {session.size[1]}×{session.size[0]}",
        )  # fmt: skip
    window = await service.frame(session.id, session.clip, pixels, index, pts, priority)
    session.size = (pixels.shape[0], pixels.shape[1])
    if window is not None:
        session.tokens_run += window.tokens
    return window


def new_stream(service: EmbedService, fields: WindowFields, core: SessionCore) -> EmbedSession:
    """A stream over ``service`` cut as ``fields`` asks; ``ClipInputError`` names a setting
    that cannot work (a stride off the tubelets, say)."""
    spec = fields.window_spec()
    spec.check(service.config)
    clip = ClipState(spec)
    return EmbedSession(
        core=core,
        model=service.model,
        clip=clip,
        top_k=fields.top_k,
        reserved_bytes=clip.nbytes(service.config, service.itemsize),
    )
