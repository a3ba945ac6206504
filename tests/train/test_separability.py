"""`python -m tools.soilnet separability`: the per-tile AUC that feature choices are made on,
over train scenes and renderers only."""

from __future__ import annotations

import numpy as np
import pytest

from tools.soilnet import separability
from tools.soilnet.__main__ import main
from vehicle_agent.quality.soilnet import CHANNELS


def test_auc_counts_order_and_ties() -> None:
    labels = np.array([True, True, False, False])
    assert separability.auc(labels, np.array([3.0, 4.0, 1.0, 2.0])) == 1.0
    assert separability.auc(labels, np.array([1.0, 2.0, 3.0, 4.0])) == 0.0
    assert separability.auc(labels, np.array([1.0, 1.0, 1.0, 1.0])) == 0.5
    assert np.isnan(separability.auc(labels[:2], np.array([1.0, 2.0])))


def test_a_moving_camera_separates_mud_by_edge_persistence() -> None:
    """On one train photo, mud on a moving lens: the texture the running mean removes is low
    on the mud and high on the passing world (AUC well below ½), which a parked camera does
    not show."""
    rows = separability.measure(["mud"], scenes=1, seconds_after=3.0)
    assert [(r.kind, r.motion) for r in rows] == [("mud", "drive"), ("mud", "still")]
    moving, parked = rows
    assert moving.soiled_tiles > 0
    assert len(moving.aucs) == CHANNELS
    assert moving.aucs[17] < 0.25
    assert parked.aucs[17] > moving.aucs[17] + 0.25


def test_the_command_refuses_an_unknown_kind(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["separability", "--kinds", "drops,tar"]) == 2
    assert "choose from" in capsys.readouterr().err
