"""`python -m tools.eval_adhesion` refuses what it cannot judge, with a message, before any run."""

from __future__ import annotations

import numpy as np
import pytest

from tools.eval_adhesion import LearnedAt, main
from vehicle_agent.quality.soilnet import CLASSES, TILE, DecisionParams, LearnedAdhesionDetector


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--split", "train", "--families", "refract"], "the train split's are sim, blurdisc"),
        (["--families", "optics"], "the held_out split's are refract"),
        (["--families", ","], "soiling families []"),
        (["--detectors", "magic"], "unknown detectors ['magic']"),
        (["--kinds", "snow"], "unknown kinds ['snow']"),
        (["--detectors", "learned", "--lines", "0.9,high"], "--lines: 'high' is not a number"),
        (["--detectors", "learned", "--lines", "1.5"], "--lines: 1.5 is outside 0.05–0.999"),
        (["--lines", "0.9"], "--lines scores the learned detector: add it to --detectors"),
    ],
)
def test_a_family_detector_kind_or_line_it_cannot_judge_is_refused(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_another_line_reuses_the_network_output_and_decides_on_its_own() -> None:
    # A network that calls every tile 0.9 soiled: the manifest's line 0.95 never flags a tile,
    # a line at 0.8 flags them all once the warm-up is over, from the same single network call.
    calls = []

    def net(features: np.ndarray) -> np.ndarray:
        calls.append(features.shape)
        rows, cols = features.shape[2] // TILE, features.shape[3] // TILE
        out = np.zeros((1, len(CLASSES), rows, cols), np.float32)
        out[0, 0], out[0, 1] = 0.1, 0.9
        return out

    source = LearnedAdhesionDetector(net, DecisionParams(on=0.95, off=0.7), every=1)
    lower = LearnedAt(source, "stub", 0.8)
    assert lower.name == "learned@0.8"
    assert lower.update(np.zeros((90, 160, 3), np.uint8), 0.0).covered_fraction == 0.0  # before
    rng = np.random.default_rng(0)
    for i in range(30):
        t = i / 10
        frame = rng.integers(0, 256, (90, 160, 3), np.uint8)
        own = source.update(frame, t)
        other = lower.update(frame, t)
    assert len(calls) == 30
    assert not own.detected
    assert own.covered_fraction == 0.0
    assert other.detected
    assert other.covered_fraction == 1.0
    classes = lower.classes()
    assert classes is not None
    assert (classes == CLASSES.index("transparent")).all()
