"""The footage bank's split: every item has one, one place is never on both sides, and no
training or tuning entry point can touch a held-out scene or renderer."""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import pytest

from tools.footage import catalog, degradations, soiling, splits


def test_every_item_and_family_has_a_split_and_both_sides_are_used() -> None:
    assert set(splits.SCENE_SPLIT) == set(catalog.BY_NAME)
    assert set(splits.SOILING_SPLIT) == set(soiling.FAMILIES)
    assert set(splits.DEGRADATION_SPLIT) == set(degradations.FAMILIES)
    for table in (splits.SCENE_SPLIT, splits.SOILING_SPLIT, splits.DEGRADATION_SPLIT):
        assert set(table.values()) == {"train", "held_out"}
    assert splits.scenes("held_out", "video"), "a held-out real clip"
    assert any(catalog.item(n).moving for n in splits.scenes("held_out")), "held-out camera motion"
    assert any(catalog.item(n).moving for n in splits.scenes("train")), "train camera motion"


def test_a_place_is_never_on_both_sides() -> None:
    sides: dict[str, set[str]] = {}
    for entry in catalog.CATALOG:
        sides.setdefault(entry.group, set()).add(splits.SCENE_SPLIT[entry.name])
    assert all(len(s) == 1 for s in sides.values()), sides
    # The bundled clip is vtest.avi's first 300 frames: the same street.
    assert splits.SCENE_SPLIT["street_vtest"] == splits.SCENE_SPLIT["vtest"]


def test_every_item_records_source_licence_size_and_motion() -> None:
    for entry in catalog.CATALOG:
        described = entry.describe()
        assert described["licence"], entry.name
        assert described["source"], entry.name
        assert entry.width > 0
        assert entry.height > 0
        assert entry.frames >= 1
        assert (entry.fps is None) == (entry.kind == "photo")


def test_unknown_names_fail_closed() -> None:
    with pytest.raises(KeyError, match="not in the split"):
        splits.split_of("scene", "nosuch")
    with pytest.raises(catalog.FootageError, match="unknown footage item"):
        catalog.item("nosuch")


def test_a_held_out_scene_is_refused_inside_training() -> None:
    held = splits.scenes("held_out", "photo")[0]
    with splits.training("test") as usage, pytest.raises(splits.HeldOutError, match=held):
        catalog.load(held)
    assert usage.held_out() == {("scene", held)}
    catalog.load(held)  # outside training: evaluation may read it


@pytest.mark.parametrize(
    ("kind", "family"),
    [("soiling", f) for f in splits.names("soiling", "held_out")]
    + [("degradation", f) for f in splits.names("degradation", "held_out")],
)
def test_a_held_out_renderer_is_refused_inside_training(kind: str, family: str) -> None:
    image = np.full((48, 64, 3), 128, np.uint8)

    def render() -> object:
        if kind == "soiling":
            return soiling.render_soiling("drops", family, 48, 64, 0.05, 0)  # type: ignore[arg-type]
        return degradations.degrade(image, "low_light", family, 0)  # type: ignore[arg-type]

    with splits.training("test"), pytest.raises(splits.HeldOutError, match=family):
        render()


TINY: dict[str, dict[str, Any]] = {
    "tools.gan.data:training_images": {"limit": 4},
    "tools.gan.data:bank_training_images": {"limit": 3},
    "tools.gan.data:bank_pair_sampler": {"batches": 2},
    "tools.soilnet.data:build_training_set": {
        "drives": 2,
        "seconds": 2.0,
        "net_width": 64,
        "street_scenes": 1,
    },
}


@pytest.mark.parametrize("entry_point", splits.TRAINING_ENTRY_POINTS)
def test_training_entry_points_touch_only_the_train_split(entry_point: str) -> None:
    """Each entry point runs on a tiny budget inside a recording context: anything held out
    raises, and what it used is all train."""
    module, _, name = entry_point.partition(":")
    func = getattr(importlib.import_module(module), name)
    with splits.training(entry_point) as usage:
        func(**TINY[entry_point])
    assert usage.used, f"{entry_point} read nothing through the bank"
    assert not usage.held_out()
    assert all(splits.split_of(k, n) == "train" for k, n in usage.used)


def test_every_entry_point_has_a_tiny_budget_here() -> None:
    assert set(TINY) == set(splits.TRAINING_ENTRY_POINTS)
