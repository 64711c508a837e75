"""``python -m server``: run uvicorn with the ``VIDSERVE_*`` settings."""

from __future__ import annotations

import argparse
import logging
import sys

import uvicorn
from pydantic import ValidationError

from server.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m server",
        description="Serve vidserve over HTTP and websockets. Every setting is read from a "
        "VIDSERVE_* environment variable (see the README's settings table); the flags below "
        "override the two most common ones.",
    )
    parser.add_argument("--host", help="address to bind (VIDSERVE_HOST)")
    parser.add_argument("--port", type=int, help="port to bind (VIDSERVE_PORT)")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        print(f"invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    run(settings)
    return 0


def run(settings: Settings) -> None:
    from server.app import create_app

    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        ws_max_size=settings.max_message_bytes,
    )


if __name__ == "__main__":
    sys.exit(main())
