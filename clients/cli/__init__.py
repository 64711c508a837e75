"""``python -m clients``: video files through a vidserve server (segment, interpolate, embed)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

import httpx

from clients.cli import embed, interpolate, segment
from clients.cli.common import CliError, default_url
from clients.python import QuotaExceeded, StreamClosed, Unauthorized, VidserveError
from clients.python.aio import API_KEY_ENV, api_key_from
from models.video import AudioCopyError, VideoError

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130  # why: the shell's 128 + SIGINT, what scripts expect after Ctrl-C
EXIT_TERMINATED = 143  # why: 128 + SIGTERM, what a service manager expects after stopping us


class Terminated(KeyboardInterrupt):
    """SIGTERM (a service manager, ``kill``, a closed terminal's parent): unwound as Ctrl-C is,
    so the partial output is deleted and the server's session closed."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m clients",
        description="Segment, interpolate or embed video files with a vidserve server.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    server = default_url()
    segment.add_parser(sub, server)
    interpolate.add_parser(sub, server)
    embed.add_parser(sub, server)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # why only there: Python takes signal handlers in the main thread alone (tests call main too)
    is_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if is_main else None
    try:
        code: int = args.run(args)
        return code
    except KeyboardInterrupt as exc:
        what = "terminated" if isinstance(exc, Terminated) else "interrupted"
        print(f"\n{what}: the work on the server was cancelled and no output was written", file=sys.stderr)
        return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED
    except AudioCopyError as exc:
        print(f"error: {exc} (--no-audio)", file=sys.stderr)
    except (CliError, VideoError) as exc:
        print(f"error: {exc}", file=sys.stderr)
    except Unauthorized as exc:
        print(f"error: {refused_key(args, exc)}", file=sys.stderr)
    except QuotaExceeded as exc:
        print(f"error: {quota_used_up(exc)}", file=sys.stderr)
    except StreamClosed as exc:
        print(
            f"error: the server closed the stream ({exc.code}: {exc.reason or 'no reason given'})",
            file=sys.stderr,
        )
    except VidserveError as exc:
        print(f"error: the server answered {exc}", file=sys.stderr)
    except httpx.TransportError as exc:
        print(f"error: lost the connection to {args.server} ({exc or type(exc).__name__})", file=sys.stderr)
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
    finally:
        if is_main:
            signal.signal(signal.SIGTERM, previous)
    return EXIT_ERROR


def refused_key(args: argparse.Namespace, exc: Unauthorized) -> str:
    """What a 401 or 4401 means here, in one line; the key itself is never shown."""
    if api_key_from(args.api_key) is None:
        return f"the server at {args.server} needs an API key: give it with --api-key KEY or ${API_KEY_ENV}"
    return (
        f"the server at {args.server} refused the API key ({exc.message}); check --api-key or ${API_KEY_ENV}"
    )


def quota_used_up(exc: QuotaExceeded) -> str:
    when = "" if exc.retry_after_s is None else f"; a place frees in about {exc.retry_after_s:g} s"
    return f"this API key's quota is used up: {exc.message}{when}"
