"""`python -m tools.kill_sweep` in small: a real daemon killed with SIGKILL during an update's
transfer and install, against the real broker; the update still ends reported and settled."""

from __future__ import annotations

import json
from pathlib import Path

from tests.uplink.broker import Broker, Certs
from tests.uplink.conftest import loop_access
from tools.kill_sweep import PHASES, SweepReport, sweep


async def test_an_update_killed_in_transfer_and_install_still_ends_reported(
    broker: Broker, certs: Certs, tmp_path: Path
) -> None:
    access = loop_access(broker, certs, ["veh-1"])
    report: SweepReport = await sweep(access, tmp_path, kills=2, seed=0, vehicle="veh-1")
    first = report.rounds[0]
    assert [k.phase for k in first.kills] == list(PHASES[:2])  # seed 0 plans two kills
    assert first.outcome == "swapped", (tmp_path / "daemon.log").read_text()[-3000:]
    assert first.settled == "model_update_confirmed"
    assert report.passed
    assert sum(report.kills.values()) >= 2
    assert json.loads(json.dumps(report.as_json()))["passed"] is True
    assert "PASS" in report.markdown()
