"""The state of one interpolation stream."""

from __future__ import annotations

from dataclasses import dataclass, field

from server.media import ImageFormat
from server.sessions.store import SessionCore
from server.tasks.interpolation import PreparedFrame


@dataclass
class InterpolationSession:
    """One live stream: its settings, the frame before the next one, and its counters."""

    core: SessionCore  # id, life-cycle and counters every task shares
    model: str  # registry name of the RIFE model
    timesteps: list[float]  # in-between positions in (0, 1), ascending
    scale: float  # flow resolution (RIFE's scale): 1.0 up to 1080p, 0.5 for 4K
    scene_change_threshold: float | None  # thumbnail SSIM below which a pair is a cut; None: never
    output_format: ImageFormat  # encoding of returned frames
    size: tuple[int, int] | None = None  # H, W, fixed by the first frame
    previous: PreparedFrame | None = None  # the last good frame, padded: the next pair's start
    previous_index: int | None = None  # its frame_index
    last_index: int | None = None  # the last frame_index received, good or bad (kept across reconnects)
    previous_pts: float | None = None  # its presentation time, when the client gave one
    outputs: int = 0  # in-between frames returned
    scene_changes: int = 0  # pairs answered with the earlier frame
    task: str = field(default="interpolate", init=False)

    @property
    def id(self) -> str:
        return self.core.id

    def public(self) -> dict[str, object]:
        """What GET /v1/sessions/{id} shows."""
        return {
            **self.core.public(),
            "task": self.task,
            "model": self.model,
            "timesteps": self.timesteps,
            "scale": self.scale,
            "scene_change_threshold": self.scene_change_threshold,
            "output_format": self.output_format,
            "frame_size": list(self.size) if self.size else None,
            "outputs": self.outputs,
            "scene_changes": self.scene_changes,
        }
