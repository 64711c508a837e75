"""Video object segmentation (XMem): its sessions and controls, its one per-frame step
shared by the stream, REST frames and clip jobs, its memory accounting, its loader and its
routes. ``task.SegmentationTask`` is its entry in the task registry."""
