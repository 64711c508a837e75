"""Exported engines are reused only when made from the same weights by the same libraries."""

from __future__ import annotations

from pathlib import Path

from models.repository import EngineMetadata, is_current, write_metadata


def metadata(sha: str, exporter: dict[str, str]) -> EngineMetadata:
    return EngineMetadata(
        model="rife-4.0",
        family="rife",
        version="4.0",
        format="onnx",
        precision="fp32",
        file="model.onnx",
        inputs=[],
        outputs=[],
        weights_sha256=sha,
        exporter=exporter,
    )


def test_is_current_checks_weights_and_library_versions(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"engine")
    write_metadata(tmp_path, metadata("a" * 64, {"torch": "2.13.0", "onnx": "1.23.2"}))
    files = ["model.onnx"]
    assert is_current(tmp_path, "a" * 64, files, {"torch": "2.13.0", "onnx": "1.23.2"})
    assert not is_current(tmp_path, "b" * 64, files, {"torch": "2.13.0", "onnx": "1.23.2"})
    assert not is_current(tmp_path, "a" * 64, files, {"torch": "2.14.0", "onnx": "1.23.2"})
    assert not is_current(tmp_path, "a" * 64, ["model.onnx", "missing.bin"])
