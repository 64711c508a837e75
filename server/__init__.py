"""vidserve's server: the app, sessions, scheduler and engines."""

__version__ = "0.1.0"
