"""Print, as a markdown table, how RIFE v4.0's middle frame compares with a 50/50 blend on the
quality set of tests/models/quality_set.py (real photographs, exact synthetic motion).

Run from the repository root: ``python bench/rife_quality.py [--weights FLOWNET_PKL]``.
Without ``--weights`` the registry's rife-4.0 weights are fetched (or taken from the cache).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import platform
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    # why: run as a script, only bench/ is on sys.path; the set lives in the test package
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from models.rife.loading import load_interpolator  # noqa: E402
from models.weights.registry import get_entry  # noqa: E402
from tests.models.quality_set import CROP_HW, CaseResult, build_cases, measure  # noqa: E402

MODEL = "rife-4.0"


def version(distribution: str) -> str:
    return importlib.metadata.version(distribution)


def markdown_table(results: list[CaseResult]) -> str:
    """The per-case rows and the mean row, PSNR in dB to two decimals."""
    lines = [
        "| case | motion | PSNR RIFE v4.0 (dB) | PSNR 50/50 blend (dB) | gain (dB) |",
        "|---|---|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.case.name} | {r.case.motion} | {r.psnr_rife:.2f} | {r.psnr_blend:.2f} | {r.gain:+.2f} |"
        )
    mean_rife = float(np.mean([r.psnr_rife for r in results]))
    mean_blend = float(np.mean([r.psnr_blend for r in results]))
    lines.append(
        f"| **mean** | | **{mean_rife:.2f}** | **{mean_blend:.2f}** | **{mean_rife - mean_blend:+.2f}** |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", type=Path, default=None, help="a flownet.pkl instead of the registry's")
    args = parser.parse_args(argv)

    interpolator = load_interpolator(
        MODEL, engine="eager", weights=args.weights, scene_change_threshold=None, progress=False
    )
    results = measure(interpolator, build_cases())
    entry = get_entry(MODEL)
    weights = args.weights.name if args.weights else f"{entry.name} ({entry.filename}, sha256 {entry.sha256})"

    print(markdown_table(results))
    print()
    print(
        f"{len(results)} cases, {CROP_HW[0]}×{CROP_HW[1]} RGB crops of scikit-image photographs; "
        "middle frame at t=0.5, eager engine, scale 1.0, scene-change check off."
    )
    print(f"Weights: {weights}.")
    print(
        f"Command: `python bench/rife_quality.py`; Python {platform.python_version()}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), numpy {np.__version__}, "
        f"scikit-image {version('scikit-image')}, Pillow {version('pillow')}, {platform.machine()}."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
