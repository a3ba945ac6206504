"""Learned soiling detector, the parts without a trained network: the temporal features, the
per-tile decision with its hysteresis, tile labels, the model folder's checks, and the monitor
falling back to the classical detector when the model cannot be used."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from vehicle_agent.enhance.manifest import MANIFEST_FILE, sha256_file
from vehicle_agent.quality.monitor import MonitorSettings, QualityMonitor
from vehicle_agent.quality.soilnet import (
    CHANNELS,
    CLASSES,
    FEATURE_VERSION,
    TILE,
    DecisionParams,
    LearnedAdhesionDetector,
    SoilFeatures,
    TileDecision,
    net_size,
    tile_texture,
    tile_truth,
)
from vehicle_agent.quality.soilnet_runtime import DetectorError, read_detector


def texture(seed: int, shape: tuple[int, int] = (180, 320)) -> npt.NDArray[np.uint8]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (*shape, 3), np.uint8)


def probs(soil: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Class probabilities with this per-tile soiling probability (all of it 'opaque')."""
    zero = np.zeros_like(soil)
    return np.stack([1 - soil, zero, zero, soil]).astype(np.float32)


def test_network_size_follows_the_aspect_ratio_in_whole_tiles() -> None:
    assert net_size(720, 1280, 192) == (112, 192)
    assert net_size(480, 640, 192) == (144, 192)
    with pytest.raises(ValueError, match="multiple of 8"):
        net_size(720, 1280, 190)
    with pytest.raises(ValueError, match="empty"):
        net_size(0, 1280, 192)


def test_features_see_a_moving_world_change_and_a_still_one_stay() -> None:
    moving, still = SoilFeatures(96), SoilFeatures(96)
    for i in range(20):
        t = i / 10
        a = moving.update(texture(i), t)
        b = still.update(texture(0), t)
    assert a.shape == b.shape == (CHANNELS, 56, 96)
    assert np.all((a >= 0) & (a <= 4))
    assert np.all((b >= 0) & (b <= 4))
    assert a[5].mean() > 0.1
    assert b[5].max() == 0.0
    assert np.ptp(a[8]) == 0.0
    assert a[8, 0, 0] == pytest.approx(a[5].mean(), rel=1e-5)


def test_onset_features_tell_a_place_that_turned_smooth_from_one_that_always_was() -> None:
    """A textured area covered by a flat dark patch (mud) loses texture and brightness against
    its reference; a flat area (a clear sky) that was always flat loses nothing."""
    features = SoilFeatures(96)
    rng = np.random.default_rng(3)
    x = np.zeros((CHANNELS, 56, 96), np.float32)
    for i in range(40):
        t = i / 10
        frame = rng.integers(40, 220, (180, 320, 3)).astype(np.uint8)  # the moving world
        frame[:60] = 200  # the sky: always flat
        if t >= 3.0:
            frame[100:160, 100:200] = 30  # mud from t = 3 s
        x = features.update(frame, t)
    mud, sky, rest = x[:, 36:50, 34:64], x[:, 2:16, :], x[:, 36:50, 70:]
    assert x.shape == (CHANNELS, 56, 96)
    assert mud[11].mean() > 0.5  # texture lost against the reference
    assert sky[11].max() < 0.05
    assert rest[11].mean() < 0.3
    assert mud[13].mean() > 0.5  # darker than it was
    assert sky[13].max() < 0.05
    assert mud[10].mean() > 2 * sky[10].mean()  # the reference remembers the texture
    assert np.ptp(x[15]) == 0.0
    assert x[15, 0, 0] == pytest.approx(x[11].mean(), rel=1e-5)


def test_edge_persistence_finds_what_stays_sharp_while_the_world_moves_past() -> None:
    """A textured drop rim fixed on the lens keeps its edges in the running mean of a moving
    world; the world's own texture averages away. On a still camera everything persists, and a
    featureless sky reads no persistence at all."""
    moving, still = SoilFeatures(96), SoilFeatures(96)
    rim = texture(99, (60, 100))
    a = b = np.zeros((CHANNELS, 56, 96), np.float32)
    for i in range(30):
        t = i / 15
        frame = texture(i)
        frame[:45] = 200  # the sky
        frame[100:160, 100:200] = rim  # the same pixels in every frame: on the lens
        a = moving.update(frame, t)
        scene = texture(0)
        scene[:45] = 200
        b = still.update(scene, t)
    on_lens, world, sky = (slice(None), slice(33, 48), slice(33, 60)), (
        slice(None), slice(20, 30), slice(70, 96)), (slice(None), slice(0, 10), slice(None))  # fmt: skip
    for kept, removed in ((16, 17), (18, 19)):
        assert a[on_lens][kept].mean() > 0.7
        assert a[world][kept].mean() < 0.35
        assert a[sky][kept].max() < 0.05
        assert a[world][removed].mean() > 2 * a[on_lens][removed].mean()
        assert b[world][kept].mean() > 0.7  # parked: the world stands still too
        assert b[world][removed].mean() < 0.1


def test_a_tile_is_soiled_only_after_warm_up_and_with_hysteresis() -> None:
    decision = TileDecision(DecisionParams(on=0.6, off=0.35, smooth_s=0.01, warmup_s=1.0))
    grid = np.zeros((4, 8), np.float32)
    high, middle = grid.copy(), grid.copy()
    high[1, 2] = 0.9
    middle[1, 2] = 0.5
    # From t = 0 (a video starts there): nothing during the warm-up, however sure the network.
    assert not decision.update(probs(high), 0.0).detected
    assert not decision.update(probs(high), 0.5).detected
    on = decision.update(probs(high), 1.2)
    assert on.detected
    assert on.tile_mask is not None
    assert on.tile_mask[1, 2]
    assert on.covered_fraction == pytest.approx(1 / 32)
    assert decision.update(probs(middle), 1.4).detected  # between off and on: held
    assert decision.tile_classes is not None
    assert decision.tile_classes[1, 2] == 3
    assert not decision.update(probs(grid), 1.6).detected


def test_a_sure_network_passes_a_line_near_certainty_within_half_a_second_one_frame_does_not() -> (
    None
):
    params = DecisionParams(on=0.98, off=0.73, smooth_s=0.3, warmup_s=0.0)
    grid = np.zeros((4, 8), np.float32)
    sure = grid.copy()
    sure[1, 2] = 0.9999
    fps = 15.0
    decision = TileDecision(params)
    for i in range(30):  # two clean seconds
        assert not decision.update(probs(grid), i / fps).detected
    latency = None
    for i in range(30, 60):
        if decision.update(probs(sure), i / fps).detected:
            latency = (i - 30) / fps
            break
    assert latency is not None
    assert latency <= 0.5  # a probability average would take 0.3 s × ln 50 ≈ 1.2 s
    # One confident frame in a clean stream moves the average only part of the way.
    decision = TileDecision(params)
    stream = [grid] * 30 + [sure] + [grid] * 10
    assert not any(decision.update(probs(g), i / fps).detected for i, g in enumerate(stream))


def test_the_detector_runs_the_network_every_nth_frame_and_checks_its_output() -> None:
    calls = []

    def net(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        calls.append(x.shape)
        return probs(np.zeros((x.shape[2] // TILE, x.shape[3] // TILE), np.float32))[None]

    detector = LearnedAdhesionDetector(net, every=3, net_width=96)
    for i in range(7):
        detector.update(texture(i), i / 10)
    assert len(calls) == 3
    assert calls[0] == (1, CHANNELS, 56, 96)

    def wrong(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return np.zeros((1, 4, 3, 3), np.float32)

    with pytest.raises(ValueError, match="expected"):
        LearnedAdhesionDetector(wrong, net_width=96).update(texture(0), 0.0)
    with pytest.raises(ValueError, match="every"):
        LearnedAdhesionDetector(net, every=0)


def test_tile_labels_ignore_partly_covered_tiles() -> None:
    classes = np.zeros((16, 24), np.int8)
    classes[0:8, 0:8] = 3  # a whole tile of mud
    classes[8:10, 8:16] = 1  # a quarter of a tile: neither clean nor soiled
    classes[0:8, 16:24][:4] = 2  # half a tile of dust
    labels = tile_truth(classes)
    assert labels.tolist() == [[3, 0, 2], [0, -1, 0]]
    # Soiling over a featureless patch of the picture is not taught as soiling (nor as clean).
    visible = np.array([[False, True, True], [True, True, True]])
    assert tile_truth(classes, visible=visible).tolist() == [[-1, 0, 2], [0, -1, 0]]


def test_tile_texture_is_the_spread_of_each_tile() -> None:
    grey = np.zeros((16, 16), np.float32)
    grey[0:8, 8:16] = np.tile([0.0, 1.0], 32).reshape(8, 8)
    assert tile_texture(grey).tolist() == [[0.0, 0.5], [0.0, 0.0]]


def manifest(folder: Path, **changes: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(b"not really onnx")
    data = {
        "name": folder.name, "version": "1.0.0", "kind": "soiling-detector",
        "file": "model.onnx", "sha256": sha256_file(folder / "model.onnx"),
        "feature_version": FEATURE_VERSION, "channels": CHANNELS, "net_width": 192,
        "tile": TILE, "classes": list(CLASSES), "decision": {"on": 0.6, "off": 0.4},
        "opset": 17, "created": "2026-12-03T00:00:00Z",
    } | changes  # fmt: skip
    (folder / MANIFEST_FILE).write_text(json.dumps(data))
    return folder


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"feature_version": FEATURE_VERSION + 1}, "features v"),
        ({"channels": 3}, "input channels"),
        ({"classes": ["clean", "dirty"]}, "classes"),
        ({"decision": {"on": 0.3, "off": 0.5}}, "off is above"),
        ({"sha256": "0" * 64}, "does not match"),
        ({"net_width": "wide"}, "invalid manifest"),
        ({"decision": {"on": 0.9995, "off": 0.7}}, "invalid manifest"),
    ],
)
def test_a_bad_model_folder_is_refused_saying_what_is_wrong(
    tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(DetectorError, match=message):
        read_detector(manifest(tmp_path / "soilnet", **changes))


def test_a_line_the_calibration_can_reach_past_0_99_is_accepted(tmp_path: Path) -> None:
    """The calibration searches on to 0.999 (`tools.soilnet.train.calibrate`); a manifest bound
    at 0.99 once refused a trained model at the end of its run."""
    read_detector(manifest(tmp_path / "soilnet", decision={"on": 0.9939, "off": 0.744}))


def test_the_monitor_keeps_the_classical_detector_when_the_model_cannot_load(
    tmp_path: Path,
) -> None:
    settings = MonitorSettings(quality=False, brisque=False, detector="learned")
    missing = QualityMonitor(dataclasses.replace(settings, model_dirs=(tmp_path,)))
    assert missing.learned is None
    assert missing.detector is not None
    assert missing.detector_label == "classical"
    assert missing.detector_fallback is not None
    assert "not found" in missing.detector_fallback
    manifest(tmp_path / "soilnet")
    broken = QualityMonitor(dataclasses.replace(settings, model_dirs=(tmp_path,)))
    assert broken.learned is None
    assert broken.detector_fallback is not None
    assert "cannot load" in broken.detector_fallback
