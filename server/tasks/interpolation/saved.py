"""An interpolation session as saved state and back: its settings, counters, and the kept
previous frame with its encoder features (``models/rife/state_io.py``)."""

from __future__ import annotations

from models.rife.state_io import frame_from_tensors, frame_tensors
from server.sessions.store import SessionCore
from server.tasks.base import SavedState
from server.tasks.interpolation.service import InterpolationService
from server.tasks.interpolation.session import InterpolationSession


def save_state(session: InterpolationSession) -> SavedState:
    tensors, previous = ({}, None) if session.previous is None else frame_tensors(session.previous)
    fields = {
        "previous": previous,
        "previous_index": session.previous_index,
        "previous_pts": session.previous_pts,
        "size": list(session.size) if session.size else None,
        "outputs": session.outputs,
        "scene_changes": session.scene_changes,
    }
    settings = {
        "timesteps": list(session.timesteps),
        "scale": session.scale,
        "scene_change_threshold": session.scene_change_threshold,
        "output_format": session.output_format,
    }
    return SavedState(tensors, fields, settings)


def restore(service: InterpolationService, saved: SavedState, core: SessionCore) -> InterpolationSession:
    fields, settings = saved.fields, saved.settings
    previous = None
    if fields["previous"] is not None:
        previous = frame_from_tensors(saved.tensors, fields["previous"], service.rife.device)
        if previous.scale != float(settings["scale"]):
            raise ValueError("the kept frame was padded for another scale than the session's")
    size = fields["size"]
    return InterpolationSession(
        core=core,
        model=service.model,
        timesteps=[float(t) for t in settings["timesteps"]],
        scale=float(settings["scale"]),
        scene_change_threshold=settings["scene_change_threshold"],
        output_format=settings["output_format"],
        size=None if size is None else (int(size[0]), int(size[1])),
        previous=previous,
        previous_index=fields["previous_index"],
        previous_pts=fields["previous_pts"],
        outputs=int(fields["outputs"]),
        scene_changes=int(fields["scene_changes"]),
    )
