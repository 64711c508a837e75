"""The vidserve Python client: ``Client`` (blocking) and ``AsyncClient`` (asyncio)."""

from clients.python.aio import (
    AsyncClient,
    AsyncInterpolationSession,
    AsyncInterpolationStream,
    AsyncSegmentationSession,
    AsyncSegmentationStream,
    AsyncSession,
)
from clients.python.errors import (
    FrameRejected,
    Gone,
    InvalidRequest,
    JobFailed,
    NotFound,
    NotReady,
    Overloaded,
    StreamClosed,
    StreamGone,
    StreamNotFound,
    VidserveError,
)
from clients.python.protocol import FrameResult, Interpolated, Job, SegmentResult, StreamedFrame
from clients.python.sync import (
    Client,
    InterpolationSession,
    InterpolationStream,
    SegmentationSession,
    SegmentationStream,
    Session,
)

__all__ = [
    "AsyncClient",
    "AsyncInterpolationSession",
    "AsyncInterpolationStream",
    "AsyncSegmentationSession",
    "AsyncSegmentationStream",
    "AsyncSession",
    "Client",
    "FrameRejected",
    "FrameResult",
    "Gone",
    "Interpolated",
    "InterpolationSession",
    "InterpolationStream",
    "InvalidRequest",
    "Job",
    "JobFailed",
    "NotFound",
    "NotReady",
    "Overloaded",
    "SegmentResult",
    "SegmentationSession",
    "SegmentationStream",
    "Session",
    "StreamClosed",
    "StreamGone",
    "StreamNotFound",
    "StreamedFrame",
    "VidserveError",
]
