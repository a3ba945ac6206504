"""`python -m tools.eval_adhesion` refuses what it cannot judge, with a message, before any run."""

from __future__ import annotations

import pytest

from tools.eval_adhesion import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--split", "train", "--families", "refract"], "the train split's are sim, blurdisc"),
        (["--families", "optics"], "the held_out split's are refract"),
        (["--families", ","], "soiling families []"),
        (["--detectors", "magic"], "unknown detectors ['magic']"),
        (["--kinds", "snow"], "unknown kinds ['snow']"),
    ],
)
def test_a_family_detector_or_kind_the_split_has_not_is_refused(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
