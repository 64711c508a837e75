"""Write the test videos in this folder: stream copies (no re-encoding) of the first packets of
OpenCV's sample clips, as Debian's ``opencv-doc`` package ships them.

    apt-get download opencv-doc && dpkg -x opencv-doc_*.deb /tmp/opencv-doc
    python tests/data/videos/make_excerpts.py /tmp/opencv-doc

Each excerpt keeps what makes its source hard to read: packed B-frames whose timestamps the
demuxer hands out of order, variable frame rate with an index that counts empty frames, and
H.264 with AAC audio in an MP4 whose index comes first."""

from __future__ import annotations

import gzip
import shutil
import sys
import tempfile
from pathlib import Path

import av

HERE = Path(__file__).parent
DOC = Path("usr/share/doc/opencv-doc")
# (source inside the package, excerpt name, video packets to copy, copy the audio)
EXCERPTS = [
    (DOC / "examples/data/Megamind.avi", "megamind_bframes.avi", 48, False),
    (DOC / "examples/data/tree.avi", "tree_vfr.avi", 9, False),
    (DOC / "opencv4/html/cup.mp4.gz", "cup_h264_aac.mp4", 40, True),
]


def excerpt(source: Path, out: Path, packets: int, with_audio: bool) -> None:
    """The first ``packets`` video packets (from the first keyframe) of ``source``, and when
    ``with_audio`` the audio packets up to the last of them, muxed unchanged into ``out``."""
    options = {"movflags": "faststart"} if out.suffix == ".mp4" else {}  # why: the index first
    with av.open(str(source)) as src, av.open(str(out), "w", options=options) as dst:
        video = src.streams.video[0]
        streams = [video, *(src.streams.audio[:1] if with_audio else [])]
        copies = {s.index: dst.add_stream_from_template(s) for s in streams}
        end_s: float | None = None
        copied = 0
        for packet in src.demux(streams):
            if packet.dts is None:
                continue  # why: the demuxer's end-of-stream flush packets carry nothing
            time_s = float((packet.pts if packet.pts is not None else packet.dts) * packet.time_base)
            if packet.stream.index == video.index:
                if copied == packets:
                    end_s = time_s
                    continue
                copied += 1
            elif end_s is not None and time_s >= end_s:
                continue
            packet.stream = copies[packet.stream.index]
            dst.mux(packet)


def main(root: Path) -> None:
    for source, name, packets, with_audio in EXCERPTS:
        with tempfile.TemporaryDirectory() as temp:
            path = root / source
            if path.suffix == ".gz":  # why: Debian compresses the clips among its HTML docs
                plain = Path(temp) / path.stem
                with gzip.open(path) as packed, plain.open("wb") as unpacked:
                    shutil.copyfileobj(packed, unpacked)
                path = plain
            excerpt(path, HERE / name, packets, with_audio)
        print(f"{name}: {(HERE / name).stat().st_size} bytes")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
