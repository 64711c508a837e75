"""``POST /v1/interpolate`` for editors: one pair, its frames back in the order asked."""

from __future__ import annotations

import email.parser
import email.policy
import io
import zipfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from models.rife.inference import Interpolator, to_uint8
from models.rife.loading import load_interpolator
from tests.server.support import RunningServer, decode, panning_frames, png


@pytest.fixture(scope="module")
def reference(rife_v40_weights: Path) -> Interpolator:
    return load_interpolator("rife-4.0", engine="eager", weights=rife_v40_weights, progress=False)


def close_to(got: np.ndarray, want: np.ndarray) -> bool:
    return got.shape == want.shape and int(np.abs(got.astype(int) - want.astype(int)).max()) <= 2


def parts(response: httpx.Response) -> list[tuple[dict[str, str], bytes]]:
    """A multipart/mixed body, parsed with the standard library's MIME parser."""
    head = f"Content-Type: {response.headers['content-type']}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + response.content)
    assert message.is_multipart()
    found = []
    for part in message.iter_parts():
        body = part.get_payload(decode=True)
        assert isinstance(body, bytes)
        found.append((dict(part.items()), body))
    return found


def test_one_timestep_returns_the_image(server: RunningServer, reference: Interpolator) -> None:
    frames = panning_frames(2)
    response = httpx.post(
        f"{server.url}/v1/interpolate",
        files={
            "frame0": ("a.png", png(frames[0]), "image/png"),
            "frame1": ("b.png", png(frames[1]), "image/png"),
        },
        data={"timesteps": "0.3"},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png" and response.headers["x-timestep"] == "0.3"
    assert close_to(decode(response.content), to_uint8(reference.interpolate(frames[0], frames[1], [0.3])[0]))


@pytest.mark.parametrize(
    "data", [{"factor": "4"}, {"timesteps": "0.25,0.5,0.75"}, {"timesteps": "[0.25, 0.5, 0.75]"}]
)
def test_several_timesteps_return_multipart_in_order(
    server: RunningServer, reference: Interpolator, data: dict[str, str]
) -> None:
    frames = panning_frames(2, step=3)
    files = {"frame0": png(frames[0]), "frame1": png(frames[1])}
    response = httpx.post(f"{server.url}/v1/interpolate", files=files, data=data, timeout=120)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("multipart/mixed; boundary=")
    got = parts(response)
    assert [h["X-Timestep"] for h, _ in got] == ["0.25", "0.5", "0.75"]
    want = reference.interpolate(frames[0], frames[1], [0.25, 0.5, 0.75])
    for (headers, body), expected in zip(got, want, strict=True):
        assert headers["Content-Type"] == "image/png"
        assert close_to(decode(body), to_uint8(expected))


def test_repeated_timestep_fields_keep_their_order(server: RunningServer) -> None:
    frames = panning_frames(2)
    files = {"frame0": png(frames[0]), "frame1": png(frames[1])}
    response = httpx.post(
        f"{server.url}/v1/interpolate", files=files, data={"timesteps": ["0.7", "0.2"]}, timeout=120
    )
    assert [h["X-Timestep"] for h, _ in parts(response)] == ["0.7", "0.2"]


@pytest.mark.parametrize(("fmt", "magic"), [("jpeg", b"\xff\xd8"), ("webp", b"RIFF")])
def test_jpeg_and_webp_in_and_out(server: RunningServer, fmt: str, magic: bytes) -> None:
    import io

    from PIL import Image

    def encode(frame: np.ndarray) -> bytes:
        out = io.BytesIO()
        Image.fromarray(frame).save(out, fmt.upper(), quality=95)
        return out.getvalue()

    frames = panning_frames(2)
    files = {"frame0": encode(frames[0]), "frame1": encode(frames[1])}
    response = httpx.post(
        f"{server.url}/v1/interpolate", files=files, data={"output_format": fmt}, timeout=120
    )
    assert response.status_code == 200 and response.headers["content-type"] == f"image/{fmt}"
    assert response.content.startswith(magic)


def test_scene_change_and_its_switch(server: RunningServer) -> None:
    frame0 = panning_frames(1)[0]
    cut = np.ascontiguousarray(255 - frame0)
    files = {"frame0": png(frame0), "frame1": png(cut)}
    response = httpx.post(f"{server.url}/v1/interpolate", files=files, timeout=120)
    assert response.headers["x-scene-change"] == "true"
    np.testing.assert_array_equal(decode(response.content), frame0)
    blended = httpx.post(
        f"{server.url}/v1/interpolate", files=files, data={"scene_change_threshold": "none"}, timeout=120
    )
    assert blended.headers["x-scene-change"] == "false"
    assert not np.array_equal(decode(blended.content), frame0)


def test_openapi_documents_the_api(server: RunningServer) -> None:
    spec = httpx.get(f"{server.url}/openapi.json").json()
    assert {"/v1/interpolate", "/v1/sessions", "/v1/sessions/{session_id}", "/readyz"} <= set(spec["paths"])


def interpolate_pair(server: RunningServer, frames: list[np.ndarray], data: dict[str, Any]) -> httpx.Response:
    files = {"frame0": png(frames[0]), "frame1": png(frames[1])}
    response = httpx.post(f"{server.url}/v1/interpolate", files=files, data=data, timeout=120)
    assert response.status_code == 200, response.text
    return response


def unzipped(response: httpx.Response) -> list[tuple[str, bytes]]:
    """A zip answer's entries, in the order they were written."""
    assert response.headers["content-type"] == "application/zip"
    assert response.headers["content-disposition"] == 'attachment; filename="interpolated.zip"'
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        return [(info.filename, archive.read(info)) for info in archive.infolist()]


def test_zip_holds_one_png_per_timestep_as_multipart_gives_them(server: RunningServer) -> None:
    frames = panning_frames(2, step=3)
    entries = unzipped(interpolate_pair(server, frames, {"factor": "4", "output": "zip"}))
    assert [name for name, _ in entries] == ["t0.250000.png", "t0.500000.png", "t0.750000.png"]
    multipart = parts(interpolate_pair(server, frames, {"factor": "4"}))
    for (_, data), (_, body) in zip(entries, multipart, strict=True):
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        np.testing.assert_array_equal(decode(data), decode(body))


def test_zip_names_tell_close_and_repeated_timesteps_apart(server: RunningServer) -> None:
    frames = panning_frames(2)
    data = {"timesteps": "0.7,0.2500001,0.25,0.7", "output": "zip"}
    entries = unzipped(interpolate_pair(server, frames, data))
    names = ["t0.7000000.png", "t0.2500001.png", "t0.2500000.png", "t0.7000000-2.png"]
    assert [name for name, _ in entries] == names  # the order asked, each timestep once
    assert np.array_equal(decode(entries[0][1]), decode(entries[3][1]))


def test_output_multipart_answers_multipart_for_one_timestep(server: RunningServer) -> None:
    response = interpolate_pair(server, panning_frames(2), {"timesteps": "0.5", "output": "multipart"})
    assert [h["X-Timestep"] for h, _ in parts(response)] == ["0.5"]


def test_an_unknown_output_is_a_422(server: RunningServer) -> None:
    frames = panning_frames(2)
    files = {"frame0": png(frames[0]), "frame1": png(frames[1])}
    response = httpx.post(f"{server.url}/v1/interpolate", files=files, data={"output": "tar"}, timeout=120)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_request" and [d["field"] for d in error["details"]] == ["output"]


def test_the_schema_declares_the_zip_answer(server: RunningServer) -> None:
    operation = httpx.get(f"{server.url}/openapi.json").json()["paths"]["/v1/interpolate"]["post"]
    assert "application/zip" in operation["responses"]["200"]["content"]
    assert "output=zip" in operation["responses"]["200"]["description"]
