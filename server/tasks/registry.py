"""The tasks this server serves: a new task is a package under ``server/tasks/`` and a line
here (``docs/architecture.md``)."""

from __future__ import annotations

from typing import Any

from server.tasks.base import Task
from server.tasks.embed.task import EmbedTask
from server.tasks.interpolation.task import InterpolationTask
from server.tasks.segmentation.task import SegmentationTask

TASKS: tuple[Task[Any, Any], ...] = (
    InterpolationTask(),
    SegmentationTask(),
    EmbedTask(),
)
