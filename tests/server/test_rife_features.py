"""RIFE 4.22+ served: the feature encoder runs once per frame a session receives (the session
keeps the previous frame's features for the next pair), and the split engines give what
the whole network gives, on every backend."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from models.rife.checkpoint import expected_shapes, load_ifnet
from models.rife.inference import Interpolator, to_uint8
from models.rife.spec import get_spec
from models.runtime import ENGINE_KINDS, EngineKind, TorchRunner
from server.scheduler import batcher
from server.settings import Settings
from tests.hashed_weights import hashed_state_dict
from tests.server.support import RunningServer, decode, panning_frames, png, running_server
from tests.server.test_interpolate import parts
from tests.server.test_stream import create, stream

MODEL = "rife-4.25"


@pytest.fixture(scope="module")
def hashed_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4.25 checkpoint file in the release's layout, with the hashed-weight recipe."""
    path = tmp_path_factory.mktemp("rife-4.25") / "flownet.pkl"
    torch.save(hashed_state_dict(expected_shapes(get_spec("4.25"))), path)
    return path


@pytest.fixture(scope="module")
def reference(hashed_weights: Path) -> Interpolator:
    """The whole network, eager, computing features inside every call."""
    net = load_ifnet(hashed_weights, get_spec("4.25"))
    return Interpolator(get_spec("4.25"), TorchRunner(net, "eager"), scene_change_threshold=None)


@pytest.fixture(scope="module", params=ENGINE_KINDS)
def features_server(
    request: pytest.FixtureRequest, hashed_weights: Path, engine_repository: Path
) -> Iterator[RunningServer]:
    engine: EngineKind = request.param
    if engine == "onnx":
        pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    settings = Settings(
        models=[MODEL],
        weights={MODEL: hashed_weights},
        model_repository=engine_repository,
        engine=engine,
        max_queue_delay_ms=2.0,
    )
    with running_server(settings) as running:
        yield running


def encoded_frames(server: RunningServer) -> float:
    """Frames the feature encoder ran on (its rows; one call may encode several frames)."""
    return server.metric("vidserve_inference_count_total", model=f"{MODEL}.encoder")


def assert_close(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    assert int(np.abs(got.astype(int) - want.astype(int)).max()) <= 1


def test_a_stream_encodes_each_frame_once(features_server: RunningServer, reference: Interpolator) -> None:
    server = features_server
    frames = panning_frames(4)
    before = encoded_frames(server)
    session = create(server, model=MODEL, factor=4, scene_change_threshold=None)
    answers = asyncio.run(stream(session["stream_url"], frames))
    assert encoded_frames(server) - before == 4  # not 2 per row: 3 pairs × 3 timesteps
    for k, (results, done) in enumerate(answers[1:], start=1):
        assert done["results"] == 3
        want = reference.interpolate(frames[k - 1], frames[k], [0.25, 0.5, 0.75])
        for (_, data), expected in zip(results, want, strict=True):
            assert_close(decode(data), to_uint8(expected))
    encoder, flow = httpx.get(f"{server.url}/readyz").json()["engines"]
    assert (encoder["part"], flow["part"]) == ("encoder", "flow")
    assert encoder["backend"] == flow["backend"] and encoder["fell_back"] is False
    assert encoder["warm"] is True and flow["warm"] is True
    for part in (encoder, flow):
        labels = {"backend": part["backend"], "provider": ",".join(part["providers"])}
        labels |= {"requested": ",".join(part["requested_providers"]), "fell_back": "false"}
        assert server.metric("vidserve_engine_info", model=part["name"], **labels) == 1


def test_rest_encodes_the_pair_once_for_every_timestep(
    features_server: RunningServer, reference: Interpolator
) -> None:
    server = features_server
    pair = panning_frames(2, step=3)
    before = encoded_frames(server)
    files = {"frame0": png(pair[0]), "frame1": png(pair[1])}
    response = httpx.post(f"{server.url}/v1/interpolate", files=files, data={"factor": "4"}, timeout=120)
    assert response.status_code == 200, response.text
    assert encoded_frames(server) - before == 2  # each frame once, not once per timestep
    want = reference.interpolate(pair[0], pair[1], [0.25, 0.5, 0.75])
    got = parts(response)
    assert [h["X-Timestep"] for h, _ in got] == ["0.25", "0.5", "0.75"]
    for (_, body), expected in zip(got, want, strict=True):
        assert_close(decode(body), to_uint8(expected))


@pytest.fixture
def tiny_queue_features_server(hashed_weights: Path, engine_repository: Path) -> Iterator[RunningServer]:
    """A queue of 4 rows: a pair's 2 encoder rows fit, its 3 flow rows beside them would not."""
    settings = Settings(
        models=[MODEL],
        weights={MODEL: hashed_weights},
        model_repository=engine_repository,
        engine="torchscript",
        max_queue_delay_ms=2.0,
        max_queue_size=4,
    )
    with running_server(settings) as running:
        yield running


def test_a_pair_refused_for_a_full_queue_is_not_encoded(
    tiny_queue_features_server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While one pair's encoder rows wait in the queue, another pair whose flow rows would
    not fit is answered 429 before anything of it runs (its frames are not encoded)."""
    server = tiny_queue_features_server
    # why: announced work holds a batch for at most MAX_HOLD_S; long enough here, on any machine
    monkeypatch.setattr(batcher, "MAX_HOLD_S", 60.0)
    scheduler = server.state.running(MODEL).scheduler
    pair = panning_frames(2, step=3)
    files = {"frame0": png(pair[0]), "frame1": png(pair[1])}
    url = f"{server.url}/v1/interpolate"
    before = encoded_frames(server)
    scheduler.loop.call_soon_threadsafe(scheduler.expect, "ghost")  # holds every batch until it comes
    answers: list[httpx.Response] = []
    first = threading.Thread(
        target=lambda: answers.append(httpx.post(url, files=files, data={"factor": "4"}, timeout=120))
    )
    first.start()
    deadline = time.monotonic() + 60
    while server.metric("vidserve_pending_request_count", model=MODEL) < 2:  # its two frames to encode
        assert time.monotonic() < deadline, "the first pair's encoder rows never reached the queue"
        time.sleep(0.02)
    refused = httpx.post(url, files=files, data={"factor": "4"}, timeout=120)
    scheduler.loop.call_soon_threadsafe(scheduler.unexpect, "ghost")
    first.join(timeout=120)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "overloaded"
    assert [a.status_code for a in answers] == [200]
    assert encoded_frames(server) - before == 2  # the first pair's frames only
