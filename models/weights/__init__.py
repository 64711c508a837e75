"""Model weights: the registry of known files and the verified, atomic downloader.

The ``fetch`` function is deliberately not re-exported here: it would shadow the
``models.weights.fetch`` submodule. Use ``from models.weights.fetch import fetch``.
"""

from models.weights.fetch import (
    ChecksumError,
    FetchError,
    OfflineError,
    cache_dir,
    fetch_main,
    recorded_sha256,
    sha256_file,
    verify_file,
    weights_path,
)
from models.weights.registry import (
    DEFAULT_MODEL,
    MODELS,
    ModelEntry,
    UnknownModelError,
    UrlSource,
    WeightsSource,
    WheelSource,
    get_entry,
    known_models,
)

__all__ = [
    "DEFAULT_MODEL",
    "MODELS",
    "ChecksumError",
    "FetchError",
    "ModelEntry",
    "OfflineError",
    "UnknownModelError",
    "UrlSource",
    "WeightsSource",
    "WheelSource",
    "cache_dir",
    "fetch_main",
    "get_entry",
    "known_models",
    "recorded_sha256",
    "sha256_file",
    "verify_file",
    "weights_path",
]
