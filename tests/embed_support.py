"""A clip encoder server for the tests of the server and the clients: vit-s on the hashed
weights, and small clips."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from server.settings import Settings

EMBED_MODEL = "videomae-vit-s-k400"
# why these: 4 sampled frames (2 slices, 392 tokens at 224) every 2nd frame keeps a window
# cheap on a 2-core CPU while it still has more than one slice; a window spans 7 frames
SMALL_WINDOW: dict[str, Any] = {"frames_per_clip": 4, "sampling_rate": 2, "stride": 4}


def embed_settings(checkpoint: Path, repository: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "models": [EMBED_MODEL],
        "weights": {EMBED_MODEL: checkpoint},
        "model_repository": repository,
        "engine": "torchscript",
        "max_queue_delay_ms": 2.0,
        **overrides,
    }
    return Settings(**values)
