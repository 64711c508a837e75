"""``python -m server``: run uvicorn with the ``VIDSERVE_*`` settings."""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import socket
import sys
import time
from types import FrameType

import uvicorn
from pydantic import ValidationError

from server import logs
from server.allocator import tune, tuning_of
from server.settings import Settings, settings_table
from server.state import ServerState, UnknownModel


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m server",
        description="Serve vidserve over HTTP and websockets. Every setting is read from a "
        "VIDSERVE_* environment variable (see the README's settings table); the flags below "
        "override the two most common ones.",
    )
    parser.add_argument("--host", help="address to bind (VIDSERVE_HOST)")
    parser.add_argument("--port", type=int, help="port to bind (VIDSERVE_PORT)")
    parser.add_argument("--settings-table", action="store_true", help="print the settings table and exit")
    args = parser.parse_args(argv)
    if args.settings_table:
        print(settings_table(), end="")
        return 0
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        # why not str(exc): it quotes each bad value, and VIDSERVE_API_KEYS holds secrets
        problems = "\n".join(
            f"  {'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        )
        print(f"invalid configuration:\n{problems}", file=sys.stderr)
        return 2
    try:
        run(settings)
    except UnknownModel as exc:  # a registry model that no task of this server serves
        print(f"invalid configuration: {exc}", file=sys.stderr)
        return 2
    return 0


def stop_at_once() -> None:
    """A second signal: exit now, waiting for nothing (not even the event loop's threads, as
    ``asyncio.run`` would); job folders left behind go at the next start. In a signal
    handler, so a plain write rather than logging, whose lock the interrupted code may hold."""
    sys.stderr.write("vidserve: a second signal; stopping at once\n")
    sys.stderr.flush()
    os._exit(1)


class DrainingServer(uvicorn.Server):
    """uvicorn, with our drain run before its own shutdown on the first SIGTERM/SIGINT
    (uvicorn alone would close websockets with 1012 before the app could finish frames).
    A second signal stops at once."""

    def __init__(self, config: uvicorn.Config, state: ServerState) -> None:
        super().__init__(config)
        self.state = state
        self.loop: asyncio.AbstractEventLoop | None = None
        self.draining = False

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.loop is None:
            super().handle_exit(sig, frame)
            return
        if self.draining:
            stop_at_once()
        self.draining = True
        self.loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        self.drain_task = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        from server.app import drain

        try:
            await drain(self.state)
        finally:
            # why: uvicorn then waits for connections only as long as the stop has left
            deadline = self.state.stop_deadline
            left = 0.0 if deadline is None else deadline - time.monotonic()
            self.config.timeout_graceful_shutdown = max(0, math.floor(left))
            self.should_exit = True


def run(settings: Settings) -> None:
    from server.app import create_app

    logs.configure(settings.log_level, settings.log_format)
    # why here: before any model loads, so its large blocks come from the heap from the start
    tune(tuning_of(settings))
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,  # why: keep logs.configure's handler, so uvicorn's lines are JSON too
        ws_max_size=settings.max_message_bytes,
    )
    server = DrainingServer(config, app.state.server)
    server.run()
    # why not a normal exit: the interpreter would join the engines' worker threads, and one
    # may be inside a batch the stop no longer waits for; logs are flushed first
    logging.shutdown()
    os._exit(0 if server.started else 1)


if __name__ == "__main__":
    sys.exit(main())
