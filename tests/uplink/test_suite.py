"""The gate's held-out suite (tools/suite.py): which uploads are held out, a suite that only grows
(a new version per addition, never a frame twice), its pairs (the footage bank's held-out set and
the fleet frames under the held-out renderers), refusal of a suite whose footage or frames
changed, and its CLI."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from tools import suite as suite_tool
from tools.dataset import INDEX, Entry
from tools.footage.sets import ENHANCE_KINDS
from tools.loop import SHIPPED
from tools.suite import FLEET, Suite, SuiteError, is_held_out, score


def entry(upload_id: str, t_video: float, label: str = "good", sha: str = "") -> Entry:
    return Entry(
        upload_id=upload_id,
        vehicle_id="veh-1",
        time=1_800_000_000.0 + t_video,
        label=label,  # type: ignore[arg-type]
        why=[],
        path=f"{label}/veh-1/{upload_id}.jpg",
        sha256=sha,
        width=64,
        height=48,
        reason="good_frame",
        content="image/jpeg",
        condition="normal",
        model=None,
        backend=None,
        quality=None,
        adhesion=None,
        frame_seq=int(t_video * 10),
        t_video=t_video,
    )


def dataset(root: Path, frames: list[tuple[str, float, str]], seed: int = 0) -> Path:
    """A data set on disk: (upload id, video time, label) per frame, each a distinct picture."""
    rng = np.random.default_rng(seed)
    lines = []
    for upload_id, t_video, label in frames:
        image = rng.integers(0, 255, (48, 64, 3), np.uint8)
        data = cv2.imencode(".jpg", image)[1].tobytes()
        e = entry(upload_id, t_video, label, hashlib.sha256(data).hexdigest())
        (root / e.path).parent.mkdir(parents=True, exist_ok=True)
        (root / e.path).write_bytes(data)
        lines.append(json.dumps(asdict(e)))
    (root / INDEX).write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A version-1 suite (building the footage bank's held-out set takes a few seconds)."""
    folder = tmp_path_factory.mktemp("suite") / "suite"
    Suite.open(folder)
    return folder


@pytest.fixture
def fresh(made: Path, tmp_path: Path) -> Suite:
    shutil.copytree(made, tmp_path / "suite")
    return Suite.load(tmp_path / "suite")


def test_every_third_five_second_segment_of_footage_is_held_out() -> None:
    held = [t for t in np.arange(0.0, 30.0, 0.5) if is_held_out(entry("x", float(t)))]
    assert held == [*np.arange(10.0, 15.0, 0.5), *np.arange(25.0, 30.0, 0.5)]


def test_the_suite_grows_by_versions_and_never_takes_a_frame_twice(
    fresh: Suite, tmp_path: Path
) -> None:
    assert fresh.version == 1
    assert fresh.footage["split"] == "held_out"
    frames = [("a", 1.0, "good"), ("b", 11.0, "good"), ("c", 12.0, "poor"), ("d", 26.0, "good")]
    first = dataset(tmp_path / "d1", frames)
    assert fresh.add(first) == 2  # b and d: held out and good; c is poor, a is trained on
    assert fresh.version == 2
    assert [f.upload_id for f in fresh.fleet] == ["b", "d"]
    assert (fresh.folder / fresh.fleet[0].path).is_file()
    assert fresh.add(first) == 0  # the same uploads again
    assert fresh.version == 2
    # The same picture uploaded again under another id is not a new frame either.
    again = tmp_path / "d2"
    shutil.copytree(first, again)
    index = (again / INDEX).read_text().replace('"upload_id": "b"', '"upload_id": "b2"')
    (again / INDEX).write_text(index)
    shutil.copyfile(again / "good/veh-1/b.jpg", again / "good/veh-1/b2.jpg")
    assert fresh.add(again) == 0
    # A full suite takes nothing more.
    fresh.max_fleet_frames = 3
    more = dataset(tmp_path / "d3", [("e", 13.0, "good"), ("f", 14.0, "good")], seed=1)
    assert fresh.add(more) == 1
    reloaded = Suite.load(fresh.folder)
    assert reloaded.version == 3
    assert [h["added"] for h in reloaded.history] == [0, 2, 1]
    assert {"b", "d", "e"} <= reloaded.held_out_ids()


def test_pairs_cover_every_condition_on_both_parts_and_identity_leaves_clean_alone(
    fresh: Suite, tmp_path: Path
) -> None:
    fresh.add(dataset(tmp_path / "d", [("b", 11.0, "good")]))
    pairs = fresh.pairs()
    fleet = [p for p in pairs if p.kind.startswith(FLEET)]
    assert sorted(p.kind for p in fleet) == sorted(FLEET + k for k in ENHANCE_KINDS)
    assert all(p.family for p in fleet if p.kind != FLEET + "clean")
    bank = {p.kind for p in pairs if not p.kind.startswith(FLEET)}
    assert bank == set(ENHANCE_KINDS)
    scores, count = score(fresh, {})
    assert count == len(pairs)
    assert scores["identity"][FLEET + "clean"] == {"mean": 60.0, "worst": 60.0}
    assert scores["identity"][FLEET + "low_light"]["mean"] < 30.0


def test_a_suite_whose_footage_or_frames_changed_is_refused(fresh: Suite, tmp_path: Path) -> None:
    fresh.add(dataset(tmp_path / "d", [("b", 11.0, "good")]))
    (fresh.folder / fresh.fleet[0].path).write_bytes(b"not the picture it was")
    with pytest.raises(SuiteError, match=r"b\.jpg: (unreadable|sha256 does not match)"):
        fresh.pairs()
    moved = replace(fresh, footage={**fresh.footage, "sha256": "0" * 64})
    with pytest.raises(SuiteError, match="now builds to sha256"):
        moved.pairs()
    (fresh.folder / "suite.json").write_text('{"format": 99}')
    with pytest.raises(SuiteError, match="format 99"):
        Suite.load(fresh.folder)
    with pytest.raises(SuiteError, match="no suite here"):
        Suite.load(tmp_path / "nowhere")


def test_the_cli_shows_a_suite_and_gates_a_model_that_improves_nothing(
    fresh: Suite, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert suite_tool.main(["show", str(fresh.folder)]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == 1
    code = suite_tool.main(
        ["gate", str(fresh.folder), "--previous", str(SHIPPED), "--new", str(SHIPPED)]
    )
    result = json.loads(capsys.readouterr().out)
    assert code == 1
    assert not result["passed"]
    assert result["reasons"] == [r for r in result["reasons"] if "no target" in r]
    assert suite_tool.main(["show", str(tmp_path / "nowhere")]) == 2
    assert "no suite here" in capsys.readouterr().err
