"""An embed session as saved state and back: its windowing, counters, and the ring of
tubelet tokens (``models/videomae/state_io.py``)."""

from __future__ import annotations

from models.videomae.state_io import clip_from_tensors, clip_tensors
from server.sessions.store import SessionCore
from server.state import ServerState
from server.tasks.base import SavedState
from server.tasks.embed.service import EmbedService
from server.tasks.embed.session import EmbedSession


def save_state(session: EmbedSession) -> SavedState:
    tensors, clip = clip_tensors(session.clip)
    fields = {
        "clip": clip,
        "size": list(session.size) if session.size else None,
        "tokens_run": session.tokens_run,
        "reserved_bytes": session.reserved_bytes,
    }
    return SavedState(tensors, fields, {**clip["spec"], "top_k": session.top_k})


def restore(state: ServerState, service: EmbedService, saved: SavedState, core: SessionCore) -> EmbedSession:
    """The session again over ``service``; its tokens stay on the CPU until a window runs
    (the engines take their inputs to their device)."""
    fields = saved.fields
    clip = clip_from_tensors(saved.tensors, fields["clip"])
    clip.spec.check(service.config)
    size = fields["size"]
    reserved = int(fields["reserved_bytes"])
    state.budget.reserve(core.id, reserved, "or ask for fewer frames_per_clip")
    return EmbedSession(
        core=core,
        model=service.model,
        clip=clip,
        top_k=int(saved.settings["top_k"]),
        reserved_bytes=reserved,
        size=None if size is None else (int(size[0]), int(size[1])),
        tokens_run=int(fields["tokens_run"]),
    )
