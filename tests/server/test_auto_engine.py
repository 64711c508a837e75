"""``VIDSERVE_ENGINE=auto`` picks each family's measured choice on this host; a named engine
always wins."""

from __future__ import annotations

from typing import Literal

import torch

from server.engines.loading import DEFAULT_AUTO, choose_backend
from server.settings import Settings
from server.tasks.segmentation.service import AUTO_ENGINES as SEGMENTATION_AUTO


def test_auto_follows_the_familys_table_on_this_host() -> None:
    host: Literal["cpu", "cuda"] = "cuda" if torch.cuda.is_available() else "cpu"
    auto = Settings(engine="auto")
    assert choose_backend(auto) == DEFAULT_AUTO[host]
    assert choose_backend(auto, SEGMENTATION_AUTO) == SEGMENTATION_AUTO[host]
    if host == "cpu":
        assert choose_backend(auto) == "torchscript" and choose_backend(auto, SEGMENTATION_AUTO) == "onnx"


def test_a_named_engine_wins() -> None:
    assert choose_backend(Settings(engine="eager"), SEGMENTATION_AUTO) == "eager"
    assert choose_backend(Settings(engine="torchscript"), SEGMENTATION_AUTO) == "torchscript"
