"""Named footage sets: built on disk, the same bytes for the same seed, truth that matches."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import pytest

from tools.footage import splits
from tools.footage.__main__ import main
from tools.footage.sets import BuildOptions, SetError, build, digest_tree

SMALL = BuildOptions(seconds=24.0, fps=5.0, width=160, height=90)


def test_adhesion_moving_repeats_for_a_seed_and_its_truth_matches(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    truth = build("adhesion-moving", a, SMALL, lambda _: None)
    build("adhesion-moving", b, SMALL, lambda _: None)
    assert digest_tree(a) == digest_tree(b)
    assert splits.split_of("scene", truth["scene"]) == "held_out"
    assert {e["family"] for e in truth["soiling"]} <= set(splits.names("soiling", "held_out"))
    assert [e["kind"] for e in truth["soiling"]] == ["drops", "mud", "dust"]
    assert truth["drive"]["stand_still"], "the drive stands still"
    assert truth["drive"]["frames"] == 120
    for event in truth["soiling"]:
        mask = cv2.imread(str(a / event["mask"]), cv2.IMREAD_GRAYSCALE)
        assert mask is not None
        assert mask.shape == (90, 160)
        assert abs(float((mask > 0).mean()) - event["coverage"]) < 1e-3
    cap = cv2.VideoCapture(str(a / "clip.avi"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 120
    other = build("adhesion-moving", tmp_path / "c", dataclasses.replace(SMALL, seed=1), print)
    assert other["frames_sha256"] != truth["frames_sha256"]


def test_the_train_split_uses_only_train_scenes_and_renderers(tmp_path: Path) -> None:
    options = dataclasses.replace(SMALL, split="train")
    truth = build("adhesion-moving", tmp_path / "t", options, lambda _: None)
    assert splits.split_of("scene", truth["scene"]) == "train"
    assert {e["family"] for e in truth["soiling"]} <= set(splits.names("soiling", "train"))


def test_enhance_set_has_every_degradation_of_each_scene(tmp_path: Path) -> None:
    options = BuildOptions(scene="home")
    index = build("enhance", tmp_path / "e", options, lambda _: None)
    kinds = {p["kind"] for p in index["pairs"]}
    assert kinds == {"low_light", "fog", "motion_blur", "rain_streaks", "lens_drops"}
    for pair in index["pairs"]:
        assert (tmp_path / "e" / pair["degraded"]).is_file()
        assert splits.split_of("degradation" if pair["kind"] != "lens_drops" else "soiling",
                               pair["family"]) == "held_out"  # fmt: skip


def test_bad_requests_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SetError, match="unknown set"):
        build("nosuch", tmp_path / "x", SMALL, print)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    with pytest.raises(SetError, match="not empty"):
        build("enhance", tmp_path / "full", SMALL, print)
    with pytest.raises(SetError, match="held_out split, not train"):
        build(
            "adhesion-moving", tmp_path / "y", BuildOptions(split="train", scene="leuvenA"), print
        )


def test_the_command_line_says_what_is_wrong_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["build", "adhesion-moving", "--out", str(tmp_path / "z"), "--scene", "nosuch"]) == 2
    )
    assert "unknown footage item 'nosuch'" in capsys.readouterr().err
    assert main(["list"]) == 0
    listing = capsys.readouterr().out
    assert "leuvenA" in listing
    assert "held_out" in listing
    json.dumps(listing)
