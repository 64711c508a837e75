"""What both commands share: reaching the server, the progress bar, where output goes."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import httpx
from tqdm import tqdm

from clients.python import Client, NotReady, Session
from clients.python.aio import API_KEY_ENV
from models.timeline import rate_of
from models.video import FrameReader, Trim, VideoError, VideoInfo

DEFAULT_URL = "http://127.0.0.1:8000"
# Output suffixes written as a video, and the encoder each container gets.
VIDEO_CODECS = {".mp4": "libx264", ".mov": "libx264", ".mkv": "libx264", ".webm": "libvpx-vp9"}


class CliError(Exception):
    """A user error (bad input, unreachable server): printed as one line, no traceback."""


def default_url() -> str:
    return os.environ.get("VIDSERVE_URL", DEFAULT_URL)


def is_video_path(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_CODECS


def codec_for(path: Path) -> str:
    return VIDEO_CODECS[path.suffix.lower()]


def add_api_key(parser: argparse.ArgumentParser) -> None:
    """``--api-key``; its default stays None, so the client reads the variable itself and no
    help text or error ever shows the key."""
    parser.add_argument(
        "--api-key",
        metavar="KEY",
        help=f"the server's API key (default ${API_KEY_ENV}, which keeps it out of the process list)",
    )


@contextlib.contextmanager
def connect(url: str, api_key: str | None = None) -> Iterator[Client]:
    """A blocking client on ``url``, checked live first so a wrong URL fails in one line;
    ``api_key`` None: ``$VIDSERVE_API_KEY``."""
    try:
        client = Client(url, api_key=api_key, timeout=120.0)
    except ValueError as exc:
        raise CliError(f"--api-key or ${API_KEY_ENV}: {exc}") from None
    try:
        try:
            client.health()
        except httpx.TransportError as exc:
            raise CliError(
                f"cannot reach the vidserve server at {url} ({exc or type(exc).__name__}); start one "
                "with `python -m server`, or give its address with --server or VIDSERVE_URL"
            ) from None
        yield client
    finally:
        client.close()


def wait_ready(client: Client, url: str) -> None:
    """One readiness check: engines still loading is a clear error, not a stream of 503s."""
    try:
        client.ready()
    except NotReady as exc:
        raise CliError(f"the server at {url} is not ready yet ({exc.message}); try again shortly") from None


def delete_quietly(session: Session) -> None:
    """Free the session on the server; a failure here must not hide the error that got us here."""
    with contextlib.suppress(Exception):
        session.delete()


def progress(total: int | None, *, desc: str, quiet: bool) -> tqdm:
    """Frames done, frames/s and ETA on stderr (ETA only when the container counts frames)."""
    return tqdm(
        total=total,
        desc=desc,
        unit="frame",
        file=sys.stderr,
        disable=quiet,
        dynamic_ncols=True,
        smoothing=0.3,
    )


def parse_rate(text: str) -> Fraction:
    """``--fps``: 60, 59.94 or 60000/1001."""
    try:
        return rate_of(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_trim(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--start", type=float, metavar="SECONDS", help="read from this time on (default 0)")
    parser.add_argument("--end", type=float, metavar="SECONDS", help="stop before this time (default: all)")


def trim_of(args: argparse.Namespace) -> Trim:
    try:
        return Trim(args.start or 0.0, args.end)
    except VideoError as exc:
        raise CliError(f"--start/--end: {exc}") from None


def finish_progress(bar: tqdm) -> None:
    """The bar's total becomes the frames really read: a container's count is an estimate
    (variable-rate files count empty frames; a cut file announces what it lost)."""
    bar.total = bar.n
    bar.refresh()


def warn_if_short(reader: FrameReader, info: VideoInfo) -> None:
    """A file that decoded to less than it announced says so on stderr, whatever --quiet says."""
    shortfall = reader.shortfall(info)
    if shortfall is not None:
        print(f"warning: {shortfall}", file=sys.stderr)
