"""Where ``segment`` puts its masks: an overlay video, or a folder of index PNGs and COCO RLE
JSON. Both appear whole or not at all: they are written beside ``--out`` and renamed onto it."""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

import numpy as np

from clients.cli.common import CliError, codec_for
from models.images import write_index_png
from models.mask_files import MASKS_JSON, frame_record, masks_document, png_name
from models.video import DecodedFrame, VideoInfo, VideoWriter, clock_for, overlay


class MaskSink(Protocol):
    def __enter__(self) -> Self: ...

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    def write(self, frame: DecodedFrame, mask: np.ndarray, tracked: list[int]) -> None:
        """mask: uint8 H×W object ids of ``frame``; tracked: the ids the session tracks."""


class OverlayVideo:
    """Frames with their objects coloured in, at the input's timestamps, audio copied."""

    def __init__(
        self, out: Path, info: VideoInfo, *, audio_from: Path | None, alpha: float, crf: int
    ) -> None:
        self.alpha = alpha
        self.writer = VideoWriter(
            out,
            width=info.width,
            height=info.height,
            fps=info.fps,
            time_base=clock_for(info.fps, info.time_base),  # why: the source's pts, exactly
            audio_from=audio_from,
            codec=codec_for(out),
            crf=crf,
        )

    def __enter__(self) -> Self:
        self.writer.__enter__()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.writer.__exit__(kind, exc, tb)

    def write(self, frame: DecodedFrame, mask: np.ndarray, tracked: list[int]) -> None:
        self.writer.write(overlay(frame.rgb, mask, self.alpha), frame.time_s)


class MaskFolder:
    """``00000.png`` ... (index PNGs, values = object ids, DAVIS palette) and ``masks.json``:
    per frame, each tracked object's COCO RLE. Written into a hidden folder beside ``out`` and
    renamed onto it at the end; an existing ``out`` must be an empty folder."""

    def __init__(self, out: Path, info: VideoInfo, *, video: Path, objects: list[int]) -> None:
        self.out = out
        self.temp = out.parent / f".{out.name}.{secrets.token_hex(4)}.partial"
        self.video, self.info, self.objects = video.name, info, objects
        self.frames: list[dict[str, object]] = []

    def __enter__(self) -> Self:
        if self.out.exists() and not (self.out.is_dir() and not any(self.out.iterdir())):
            raise CliError(f"--out {self.out}: exists; give a new folder name or an empty folder")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.temp.mkdir()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if kind is None:
                body = masks_document(self.video, self.info, self.objects, self.frames)
                (self.temp / MASKS_JSON).write_text(json.dumps(body))
                os.replace(self.temp, self.out)  # why replace: also takes the place of an empty folder
        finally:
            shutil.rmtree(self.temp, ignore_errors=True)

    def write(self, frame: DecodedFrame, mask: np.ndarray, tracked: list[int]) -> None:
        write_index_png(self.temp / png_name(frame.index), mask)
        self.frames.append(frame_record(frame.index, frame.time_s, mask, tracked))
