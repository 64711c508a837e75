"""Host time per frame outside the engine (issue 16): what the server spends decoding what
clients send and encoding what it answers, per task and format, through the server's own
functions (``server/media.py``, ``server/tasks/segmentation/masks.py``). On a GPU, where the
engine takes a few ms, this is the whole cost of a frame; the goal is ≤ 10 ms of CPU for a
480p segmentation frame (JPEG in, index PNG out), so that one core feeds 100 frames/s.

    python bench/host_time.py --write

Each row's cases run interleaved (one call of each in turn, ``--repeats`` times), so load
falls on all alike; CPU time is the process's (user + system), wall time beside it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # why: run as a script, only bench/ is on sys.path

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from report import device_line, load_average, refuse_when_loaded, versions, write_section  # noqa: E402

from server.media import ImageFormat, decode_image, encode_image  # noqa: E402
from server.tasks.segmentation.masks import encode_index_png, encode_rles  # noqa: E402

SECTION = "host_time"
MAX_PIXELS = 3840 * 2160
SIZES = {"480p": (480, 864), "720p": (720, 1280), "1080p": (1080, 1920)}


@dataclass(frozen=True)
class Case:
    task: str
    what: str  # what the host does
    size: str
    run: Callable[[], object]


def photo(height: int, width: int) -> np.ndarray:
    """uint8 H×W×3: scikit-image's astronaut resized, so codecs see a real picture's detail."""
    from skimage import data  # why here: a test dependency, needed by this script alone

    return np.asarray(Image.fromarray(data.astronaut()).resize((width, height), Image.Resampling.BILINEAR))


def blobs(height: int, width: int, objects: int) -> np.ndarray:
    """uint8 H×W index mask: ``objects`` ellipses, as a segmentation answer looks."""
    yy, xx = np.mgrid[:height, :width]
    mask = np.zeros((height, width), np.uint8)
    for k in range(1, objects + 1):
        cy, cx = height * k / (objects + 1), width * (0.3 + 0.4 * (k % 2))
        mask[((yy - cy) / (height / 5)) ** 2 + ((xx - cx) / (width / 6)) ** 2 < 1] = k
    return mask


def size_cases(size: str) -> list[Case]:
    """Every case at one frame size (its own frame and mask, bound here)."""
    frame = photo(*SIZES[size])
    mask = blobs(*SIZES[size], objects=2)
    out = []
    formats: tuple[ImageFormat, ...] = ("png", "jpeg", "webp")
    for fmt in formats:
        data = encode_image(frame, fmt)  # what a client sends
        out.append(
            Case("any", f"decode a {fmt.upper()} frame", size, partial(decode_image, data, MAX_PIXELS))
        )
    for fmt in ("png", "jpeg", "webp"):
        out.append(
            Case(
                "interpolate",
                f"encode an in-between as {fmt.upper()}",
                size,
                partial(encode_image, frame, fmt),
            )
        )
    out.append(Case("segment", "encode the index PNG (2 objects)", size, partial(encode_index_png, mask)))
    out.append(Case("segment", "encode COCO RLE (2 objects)", size, partial(encode_rles, mask, [1, 2])))
    return out


def cases(sizes: Sequence[str]) -> list[Case]:
    return [case for size in sizes for case in size_cases(size)]


def measure(all_cases: list[Case], repeats: int) -> dict[int, tuple[list[float], list[float]]]:
    """Per case: (CPU ms, wall ms) of each call, taken in turn with every other case."""
    times: dict[int, tuple[list[float], list[float]]] = {i: ([], []) for i in range(len(all_cases))}
    for case in all_cases:
        case.run()  # warm-up
    for _ in range(repeats):
        for i, case in enumerate(all_cases):
            cpu, wall = time.process_time(), time.perf_counter()
            case.run()
            times[i][0].append((time.process_time() - cpu) * 1000)
            times[i][1].append((time.perf_counter() - wall) * 1000)
    return times


def table(all_cases: list[Case], times: dict[int, tuple[list[float], list[float]]]) -> str:
    rows = ["| task | host work | frame | CPU ms (median) | wall ms (median) |", "|---|---|---|---:|---:|"]
    for i, case in enumerate(all_cases):
        cpu, wall = (statistics.median(t) for t in times[i])
        rows.append(f"| {case.task} | {case.what} | {case.size} | {cpu:.1f} | {wall:.1f} |")
    return "\n".join(rows)


def segmentation_frame_ms(all_cases: list[Case], times: dict[int, tuple[list[float], list[float]]]) -> str:
    """The goal's frame: a 480p JPEG decoded and its index PNG encoded."""
    pick = {(c.size, c.what): i for i, c in enumerate(all_cases)}
    keys = [("480p", "decode a JPEG frame"), ("480p", "encode the index PNG (2 objects)")]
    if not all(k in pick for k in keys):
        return ""
    total = sum(statistics.median(times[pick[k]][0]) for k in keys)
    verdict = "meets" if total <= 10 else "misses"
    return (f"A 480p segmentation frame, JPEG in and index PNG out, costs {total:.1f} ms of host CPU: it "
            f"{verdict} the goal of 10 ms (one core feeding 100 frames/s).")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="480p,720p,1080p")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--write", action="store_true", help="write the section of BENCHMARKS.md")
    args = parser.parse_args(argv)
    if args.write:
        refuse_when_loaded()
    load_start, start = load_average(), time.perf_counter()
    all_cases = cases([s for s in args.sizes.split(",") if s])
    times = measure(all_cases, args.repeats)
    body = "\n".join([
        "## Host time per frame outside the engine (`bench/host_time.py`)",
        "",
        device_line(),
        f"- Versions: {versions()}.",
        f"- Command: `python bench/host_time.py {' '.join(argv)}` ({time.perf_counter() - start:.0f} s, "
        f"{os.cpu_count()} cores); load average {load_start} at the start, {load_average()} at the end.",
        "- The server's own decode and encode functions on a photograph (scikit-image's astronaut) and a "
        "2-object index mask; cases interleaved call by call; CPU = user + system time of the process.",
        "",
        table(all_cases, times),
        "",
        segmentation_frame_ms(all_cases, times),
    ])  # fmt: skip
    print(body)
    if args.write:
        write_section(REPO_ROOT / "BENCHMARKS.md", SECTION, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
