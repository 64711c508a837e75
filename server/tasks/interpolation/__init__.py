"""Frame interpolation (RIFE v4): its sessions, its one per-frame step shared by the stream,
REST and clip jobs, its loader, and its routes. ``task.InterpolationTask`` is its entry in
the task registry."""
