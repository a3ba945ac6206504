"""Soiling detector training: a tiny network trained on a few drives learns (the loss falls) and
finds a mud patch it has not seen on a drive it has not seen; the export runs in the daemon's
detector and raises the alarm there."""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training needs the train extra (torch)")

from tools.footage import catalog, splits, streets  # noqa: E402
from tools.footage.soiling import SOILING_KINDS  # noqa: E402
from tools.soilnet.data import (  # noqa: E402
    FEATURELESS_STD,
    FIRST_ONSET_S,
    DriveRecipe,
    Event,
    Samples,
    _load_train_scene,
    build_training_set,
    cached,
    group_by_size,
    paint_featureless,
    recipes,
    render_drive,
    train_families,
    train_scenes,
)
from tools.soilnet.train import (  # noqa: E402
    TileNet,
    TrainConfig,
    _weighted_loss,
    calibrate,
    export_onnx,
    kind_balance,
    predict,
    soiling_balance,
    tile_scores,
    train,
)
from vehicle_agent.enhance.manifest import MANIFEST_FILE, sha256_file  # noqa: E402
from vehicle_agent.quality.soilnet import (  # noqa: E402
    CHANNELS,
    CLASSES,
    FEATURE_VERSION,
    TILE,
    DecisionParams,
    LearnedAdhesionDetector,
    tile_texture,
)
from vehicle_agent.quality.soilnet_runtime import open_tile_net, read_detector  # noqa: E402

NET_WIDTH = 96
SCENE = "street_vtest"


def drive(seed: int, onset: float | None = 0.0) -> DriveRecipe:
    """A short drive over a train scene with 12 % mud (blobs placed by `seed`) from `onset`
    (None: clean)."""
    events = (Event("mud", "sim", 0.12, onset, None, seed),) if onset is not None else ()
    return DriveRecipe(
        scene=SCENE, seconds=3.5, fps=6.0, light="day", motion="drive", size=(320, 180),
        events=events, seed=seed,
    )  # fmt: skip


@functools.cache
def scene(name: str) -> list[np.ndarray]:
    return _load_train_scene(name)


def samples(recipes: list[DriveRecipe]) -> Samples:
    with splits.training("soilnet test"):
        return group_by_size([render_drive(r, NET_WIDTH, 1, scene) for r in recipes])


@pytest.fixture(scope="module")
def trained() -> tuple[TileNet, list[float], Samples]:
    """Twelve drives (the patches in other places each time, some arriving mid-drive, some
    drives clean), then two drives it has not seen."""
    data = samples([drive(seed, (0.0, 0.0, 1.8, None)[seed % 4]) for seed in range(12)])
    result = train(
        data, TrainConfig(epochs=8, batch_size=8, lr=1e-2, width=12, seed=0), log=lambda _: None
    )
    return result.net, result.losses, samples([drive(101), drive(102)])


def test_tiny_training_learns_and_finds_a_mud_patch_on_an_unseen_drive(
    trained: tuple[TileNet, list[float], Samples],
) -> None:
    net, losses, unseen = trained
    assert losses[-1] < 0.7 * losses[0], losses
    probs = predict(net, unseen.x)
    soil = 1.0 - probs[:, 0]
    patch, clean = unseen.y > 0, unseen.y == 0
    assert patch.any()
    assert clean.any()
    assert soil[patch].mean() > soil[clean].mean() + 0.5
    scores = tile_scores(probs, unseen.y, 0.5)
    assert scores.recall > 0.7, scores
    assert scores.precision > 0.9, scores


def test_training_drives_soil_the_lens_only_after_clean_driving_and_include_clean_ones() -> None:
    """The onset features need a clean stretch before the soiling arrives; clean drives with
    stand-stills and at night teach what must not raise an alarm."""
    with splits.training("soilnet test"):
        plan = recipes(120, 5, seconds=20.0)
    onsets = [e.onset_s for r in plan for e in r.events]
    assert min(onsets) >= FIRST_ONSET_S
    clean = [r for r in plan if not r.events]
    assert 0.2 < len(clean) / len(plan) < 0.5
    assert any(r.light == "night" for r in clean)
    assert any(r.stand_still for r in clean)
    waiting = [r for r in plan if r.events and r.stand_still]
    assert waiting
    assert all(s0 <= r.events[0].onset_s <= s1 for r in waiting for s0, s1 in r.stand_still or ())


def test_training_drives_use_every_train_family_and_featureless_clean_scenes() -> None:
    """All train soiling families soil the lens; most clean drives (and some soiled ones) get
    large uniform regions, the negatives that teach sky and walls are not soiling."""
    with splits.training("soilnet test"):
        plan = recipes(160, 5, seconds=20.0)
    assert {e.family for r in plan for e in r.events} == set(splits.names("soiling", "train"))
    clean = [r for r in plan if not r.events]
    soiled = [r for r in plan if r.events]
    assert sum(r.featureless is not None for r in clean) / len(clean) > 0.4
    assert 0.1 < sum(r.featureless is not None for r in soiled) / len(soiled) < 0.45


def test_drives_from_some_families_only_draw_the_same_soiling_from_those_families() -> None:
    """A leave-one-renderer-out run: the same drives, kinds, coverages and onsets, each event's
    renderer drawn from the chosen families only."""
    with splits.training("soilnet test"):
        every = recipes(60, 5, seconds=20.0)
        some = recipes(60, 5, seconds=20.0, families=["blurdisc", "sim"])
    events = [
        (a, b)
        for ra, rb in zip(every, some, strict=True)
        for a, b in zip(ra.events, rb.events, strict=True)
    ]
    assert events
    assert {b.family for _, b in events} == {"sim", "blurdisc"}
    assert all(
        a.kind == b.kind and a.coverage == b.coverage and a.onset_s == b.onset_s for a, b in events
    )
    assert train_families(["optics", "sim"]) == [
        f for f in splits.names("soiling", "train") if f in {"optics", "sim"}
    ]


@pytest.mark.parametrize(
    ("families", "message"),
    [
        (["refract"], "refract: not train families"),
        (["sim", "nope"], "nope: not train families"),
        ([], "no soiling family chosen"),
    ],
)
def test_a_held_out_unknown_or_empty_family_list_is_refused(
    families: list[str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        train_families(families)


def test_drives_that_leave_scenes_out_never_go_over_them() -> None:
    """A leave-scenes-out run: the scenes a train-split evaluation judges on are never driven over,
    in training or in validation (the same recipes)."""
    left_out = splits.scenes("train")[:2]
    with splits.training("soilnet test"):
        plan = recipes(80, 5, seconds=20.0, left_out_scenes=left_out)
    driven = {r.scene for r in plan}
    assert not driven & set(left_out)
    assert driven == set(train_scenes(left_out))


def test_street_scenes_join_the_cycle_each_its_own_and_without_the_left_out_photos() -> None:
    """`--street-scenes`: composed streets are interleaved with the photos, each drive over a
    street knows the photos it may be textured with, and a left-out scene is not among them."""
    left_out = ("aero1", "brick")
    with splits.training("soilnet test"):
        plan = recipes(60, 5, seconds=20.0, left_out_scenes=left_out, street_scenes=10)
        val = recipes(60, 6, seconds=20.0, left_out_scenes=left_out, street_scenes=10)
    named = [r.scene for r in plan if streets.is_street(r.scene)]
    assert len(set(named)) == 10
    assert 0.2 < len(named) / len(plan) < 0.4  # 10 streets beside 25 photos
    assert not set(named) & {r.scene for r in val}  # validation drives see other streets
    for r in plan:
        if streets.is_street(r.scene):
            assert r.textures == tuple(train_scenes(left_out))
        else:
            assert r.textures == ()
            assert r.scene not in left_out
    with splits.training("soilnet test"):
        assert not any(streets.is_street(r.scene) for r in recipes(30, 5, seconds=20.0))


def test_a_drive_over_a_street_reads_only_its_allowed_train_photos() -> None:
    recipe = DriveRecipe(
        scene="street-41", seconds=2.0, fps=5.0, light="day", motion="drive", size=(320, 180),
        events=(Event("mud", "sim", 0.05, 0.0, None, 3),), seed=3,
        textures=("gravel", "grass", "graf1"),
    )  # fmt: skip
    read: list[str] = []

    def frames(name: str) -> list[np.ndarray]:
        read.append(name)
        return scene(name)

    with splits.training("soilnet test") as usage:
        part = render_drive(recipe, NET_WIDTH, 1, frames)
    assert set(read) <= {"gravel", "grass", "graf1"}
    assert not usage.held_out()
    assert len(part.y) > 0
    assert np.any(part.y > 0)


def test_a_video_share_sends_that_share_of_drives_over_clips_and_leaves_every_other_draw() -> None:
    """`--video-share`: a vehicle waits at lights while the world moves by itself; cycled, the
    three train clips get one drive in 78, so the share sends more drives over them, drawn from
    a stream of their own: everything else about each drive is as without it."""
    with splits.training("soilnet test"):
        plain = recipes(160, 5, seconds=20.0, street_scenes=48)
        more = recipes(160, 5, seconds=20.0, street_scenes=48, video_share=0.25)
    clips = {n for n in splits.scenes("train") if catalog.item(n).kind == "video"}
    assert clips
    assert sum(r.scene in clips for r in plain) < 10
    assert 25 < sum(r.scene in clips for r in more) < 60
    assert {r.scene for r in more if r.scene in clips} == clips
    for a, b in zip(plain, more, strict=True):
        if b.scene in clips:
            assert b.textures == ()
        assert dataclasses.replace(a, scene=b.scene, textures=b.textures) == b


def test_a_video_share_out_of_range_or_with_no_clip_left_is_refused() -> None:
    with pytest.raises(ValueError, match=r"video share 1\.2"):
        recipes(4, 0, video_share=1.2)
    clips = [n for n in splits.scenes("train") if catalog.item(n).kind == "video"]
    with pytest.raises(ValueError, match="no train scene left is a clip"):
        recipes(4, 0, left_out_scenes=clips, video_share=0.5)


def test_a_negative_street_count_is_refused() -> None:
    with pytest.raises(ValueError, match="street scenes -1"):
        recipes(4, 0, street_scenes=-1)


@pytest.mark.parametrize(
    ("left_out", "message"),
    [(["chelsea"], "chelsea: not train scenes"), (None, "every train scene is left out")],
)
def test_leaving_out_a_scene_not_in_the_train_split_or_every_scene_is_refused(
    left_out: list[str] | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        train_scenes(splits.scenes("train") if left_out is None else left_out)


def test_featureless_regions_are_seeded_world_fixed_and_uniform() -> None:
    frames = scene(SCENE)[:3]
    painted = paint_featureless(frames, 7)
    again = paint_featureless(frames, 7)
    assert all(np.array_equal(a, b) for a, b in zip(painted, again, strict=True))
    assert not np.array_equal(painted[0], paint_featureless(frames, 8)[0])
    # The same regions in the same colours in every frame: the world carries them.
    region = np.any(painted[0] != frames[0], axis=2)
    assert float(region.mean()) > 0.05
    for later in painted[1:]:
        assert float(np.all(later == painted[0], axis=2)[region].mean()) > 0.95

    def flat(image: np.ndarray) -> float:
        grey = np.asarray(image, np.float32).mean(axis=2)
        small = cv2.resize(grey, (NET_WIDTH, NET_WIDTH * grey.shape[0] // grey.shape[1]))
        return float((tile_texture(small / 255.0) < FEATURELESS_STD).mean())

    assert flat(painted[0]) > flat(frames[0]) + 0.05


def test_a_clean_drive_over_featureless_regions_is_labelled_clean_everywhere() -> None:
    recipe = DriveRecipe(
        scene=SCENE, seconds=2.5, fps=6.0, light="day", motion="drive", size=(320, 180),
        events=(), seed=3, featureless=11,
    )  # fmt: skip
    with splits.training("soilnet test"):
        part = render_drive(recipe, NET_WIDTH, 1, scene)
    assert len(part.y) > 0
    assert np.all(part.y == 0)


def test_a_lower_label_cover_teaches_the_partly_covered_tiles_as_soiled() -> None:
    recipe = drive(5, 0.0)
    with splits.training("soilnet test"):
        usual = render_drive(recipe, NET_WIDTH, 1, scene)
        low = render_drive(recipe, NET_WIDTH, 1, scene, label_cover=0.1)
    assert np.array_equal(usual.x, low.x)
    assert (low.y > 0).sum() > (usual.y > 0).sum()
    assert np.all(low.y[usual.y > 0] == usual.y[usual.y > 0])  # what was soiled stays so
    assert (low.y == -1).sum() < (usual.y == -1).sum()


@pytest.mark.parametrize("cover", [0.0, -0.1, 1.5])
def test_a_label_cover_outside_zero_to_one_is_refused(cover: float) -> None:
    with pytest.raises(ValueError, match="label cover"):
        build_training_set(2, 0, 2.0, NET_WIDTH, 1, label_cover=cover)


def test_the_cache_writes_the_features_once_and_reads_them_back_mapped(tmp_path: Path) -> None:
    calls = []

    def build(x_path: Path) -> Samples:
        calls.append(x_path)
        x = np.lib.format.open_memmap(x_path, mode="w+", dtype=np.float16, shape=(2, 3, 8, 8))
        x[:] = 1.0
        return Samples(x, np.zeros((2, 1, 1), np.int8))

    first = cached(tmp_path / "set", build, lambda _: None)
    again = cached(tmp_path / "set", build, lambda _: None)
    assert len(calls) == 1
    assert isinstance(again.x, np.memmap)
    assert float(again.x.sum()) == float(first.x.sum()) == 2 * 3 * 8 * 8
    assert not list(tmp_path.glob("*.part"))


def test_the_cache_keeps_the_soiling_kinds(tmp_path: Path) -> None:
    kinds = np.array([[[0]], [[1]]], np.int8)

    def build(x_path: Path) -> Samples:
        x = np.lib.format.open_memmap(x_path, mode="w+", dtype=np.float16, shape=(2, 3, 8, 8))
        return Samples(x, np.array([[[0]], [[1]]], np.int8), kinds)

    cached(tmp_path / "set", build, lambda _: None)
    again = cached(tmp_path / "set", build, lambda _: None)
    assert again.kind is not None
    assert np.array_equal(again.kind, kinds)


def test_each_soiled_tile_records_the_kind_it_comes_from() -> None:
    """Drops and mist are both taught as "transparent"; the samples say which is which (for
    `--balance kind`), and nothing is recorded on clean or ignored tiles."""
    recipe = DriveRecipe(
        scene=SCENE, seconds=2.5, fps=6.0, light="day", motion="drive", size=(320, 180),
        events=(Event("drops", "sim", 0.05, 0.0, None, 3), Event("mud", "sim", 0.05, 0.0, None, 4)),
        seed=3,
    )  # fmt: skip
    with splits.training("soilnet test"):
        part = render_drive(recipe, NET_WIDTH, 1, scene, label_cover=0.1)
    assert part.kind is not None
    assert part.kind.shape == part.y.shape
    assert np.all(part.kind[part.y <= 0] == 0)
    drops, mud = 1 + SOILING_KINDS.index("drops"), 1 + SOILING_KINDS.index("mud")
    assert set(np.unique(part.kind[part.y > 0])) == {drops, mud}
    assert np.all(part.y[part.kind == drops] == CLASSES.index("transparent"))
    assert np.all(part.y[part.kind == mud] == CLASSES.index("opaque"))
    grouped = group_by_size([part, part])
    assert grouped.kind is not None
    assert np.array_equal(grouped.kind[: len(part.y)], part.kind)


def test_kind_balance_weighs_each_soiling_kind_as_the_most_common_one() -> None:
    labels = np.array([[0, 1, 1, 1, 1, 1, 2, 3, -1]], np.int8)
    kinds = np.array([[0, 2, 2, 2, 2, 1, 3, 4, 0]], np.int8)  # four mist tiles, one drop tile
    assert kind_balance(labels, kinds) == (1.0, 4.0, 1.0, 4.0, 4.0)


def test_the_kind_weighted_loss_is_the_plain_loss_without_kind_weights_and_lifts_rare_kinds() -> (
    None
):
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 3, 5, generator=gen)
    y = torch.randint(-1, 4, (2, 3, 5), generator=gen)
    kind = torch.where(y > 0, torch.randint(1, 5, (2, 3, 5), generator=gen), 0)
    cw = torch.tensor([1.0, 1.5, 2.0, 4.0])
    plain = torch.nn.CrossEntropyLoss(weight=cw, ignore_index=-1)(logits, y)
    per_tile = torch.nn.CrossEntropyLoss(weight=cw, ignore_index=-1, reduction="none")(logits, y)
    assert torch.allclose(_weighted_loss(per_tile, y, cw, None, None), plain)
    ones = torch.ones(5)
    assert torch.allclose(_weighted_loss(per_tile, y, cw, ones, kind), plain)
    heavy = torch.tensor([1.0, 50.0, 1.0, 1.0, 1.0])  # drops count fifty times
    drops = (kind == 1) & (y > 0)
    assert drops.any()
    weighted = _weighted_loss(per_tile, y, cw, heavy, kind)
    drop_mean = per_tile[drops].sum() / cw[y[drops]].sum()
    assert abs(float(weighted - drop_mean)) < abs(float(plain - drop_mean))


def test_kind_weights_without_recorded_kinds_are_refused() -> None:
    data = Samples(np.zeros((2, CHANNELS, 32, 32), np.float16), np.zeros((2, 4, 4), np.int8))
    with pytest.raises(ValueError, match="record each tile's soiling kind"):
        train(data, TrainConfig(epochs=1, kind_weights=(1.0,) * 5), log=lambda _: None)


def test_calibration_picks_the_lowest_threshold_that_holds_the_precision() -> None:
    labels = np.array([[[1, 1, 0, 0]]], np.int8)
    soil = np.array([0.9, 0.7, 0.6, 0.2], np.float32)
    probs = np.stack([1 - soil, soil, 0 * soil, 0 * soil])[None, :, None, :]
    on, off = calibrate(probs.astype(np.float32), labels, precision=0.95)
    assert 0.6 < on <= 0.7
    assert off < on


def test_calibration_goes_past_0_98_when_clean_frames_need_it() -> None:
    # 30 frames of 4 tiles: one tile soiled in each of the first 10 (at 0.999); 20 clean
    # frames, one of which has a tile at 0.99 (every tile of a clean frame counts here).
    soil = np.full((30, 1, 4), 0.1, np.float32)
    labels = np.zeros((30, 1, 4), np.int8)
    soil[:10, 0, 0], labels[:10, 0, 0] = 0.999, 3
    soil[20, 0, 1] = 0.99
    zero = np.zeros_like(soil)
    probs = np.stack([1 - soil, zero, zero, soil], axis=1)
    on, _ = calibrate(probs, labels, precision=0.95, alarm=0.2, clean_alarms=0.0)
    assert 0.99 < on <= 0.999


def test_the_export_runs_in_the_daemons_detector_and_raises_the_alarm(
    trained: tuple[TileNet, list[float], Samples], tmp_path: Path
) -> None:
    net, _, _ = trained
    folder = tmp_path / "soilnet"
    diff = export_onnx(net, folder / "model.onnx", height=56, width=NET_WIDTH)
    assert diff < 1e-4
    manifest = {
        "name": "soilnet", "version": "0.0.1", "kind": "soiling-detector", "file": "model.onnx",
        "sha256": sha256_file(folder / "model.onnx"), "feature_version": FEATURE_VERSION,
        "channels": CHANNELS, "net_width": NET_WIDTH, "tile": TILE, "classes": list(CLASSES),
        "decision": {"on": 0.5, "off": 0.3}, "opset": 17,
        "created": "2026-12-03T00:00:00Z",
    }  # fmt: skip
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    model = read_detector(folder)
    detector = LearnedAdhesionDetector(
        open_tile_net(model, "onnxruntime"), DecisionParams(on=0.5, off=0.3), NET_WIDTH, every=1
    )
    from tools.footage.drive import DriveSpec, synthesise  # noqa: PLC0415
    from tools.footage.soiling import render_soiling  # noqa: PLC0415
    from vehicle_agent.quality.metrics import prepare  # noqa: PLC0415

    with splits.training("soilnet test"):
        frames = synthesise(
            scene(SCENE), DriveSpec(seconds=4.0, fps=6.0, width=320, height=180, light="day"), 21
        )
        mud = render_soiling("mud", "sim", 180, 320, 0.12, 21)
    states = []
    for i in range(frames.frames):
        t = i / 6.0
        frame = frames.frame(i)
        if t >= 2.0:
            frame = mud.apply(frame)
        estimate = detector.update(prepare(np.ascontiguousarray(frame[..., ::-1]), 320).colour, t)
        states.append((round(t, 2), estimate.detected, round(estimate.covered_fraction, 3)))
    assert not any(d for t, d, _ in states if t < 2.0), states
    assert any(d for t, d, _ in states if 2.0 <= t <= 3.0), str(states)


def test_soiling_balance_weighs_each_soiling_class_as_the_most_common_one() -> None:
    labels = np.array([[-1, 0, 0, 0, 1, 1, 1, 1, 2, 2, 3]])
    assert soiling_balance(labels) == (1.0, 1.0, 2.0, 4.0)
    assert soiling_balance(np.array([[0, 1, 1]])) == (1.0, 1.0, 1.0, 1.0)  # absent: weight 1


def test_a_network_without_some_channels_ignores_them_and_its_export_takes_every_channel(
    tmp_path: Path,
) -> None:
    import onnxruntime as ort  # noqa: PLC0415

    net = TileNet(width=12, dropped=(0, 1, 2, 3, 12)).eval()
    x = torch.rand(1, CHANNELS, 32, 64)
    other = x.clone()
    other[:, [0, 1, 2, 3, 12]] = torch.rand(1, 5, 32, 64)
    kept = x.clone()
    kept[:, 4] += 0.5
    with torch.no_grad():
        assert torch.equal(net(x), net(other))
        assert not torch.equal(net(x), net(kept))
    assert export_onnx(net, tmp_path / "model.onnx", height=32, width=64) < 1e-4
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[1] == CHANNELS


@pytest.mark.parametrize("dropped", [(20,), (-1,), tuple(range(CHANNELS))])
def test_a_dropped_channel_list_out_of_range_or_of_every_channel_is_refused(
    dropped: tuple[int, ...],
) -> None:
    with pytest.raises(ValueError, match="dropped channels"):
        TileNet(width=12, dropped=dropped)


@pytest.mark.parametrize(
    ("option", "spec", "message"),
    [
        ("--drop-channels", "0,x", "not a comma-separated list of channels"),
        ("--drop-channels", "0,20", "dropped channels [0, 20]"),
        ("--families", "sim,refract", "refract: not train families"),
        ("--leave-out-scenes", "aero1,tree", "tree: not train scenes"),
        ("--street-scenes", "-1", "-1 is below 0"),
        ("--street-scenes", "two", "'two' is not a whole number"),
        ("--video-share", "1.5", "1.5 is not in [0, 1]"),
        ("--video-share", "many", "'many' is not a number"),
    ],
)
def test_the_cli_refuses_a_bad_list_with_a_message_before_building_anything(
    option: str, spec: str, message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from tools.soilnet.__main__ import main  # noqa: PLC0415

    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--out", str(tmp_path), option, spec])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
