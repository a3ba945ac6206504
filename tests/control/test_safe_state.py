"""`vehicle-agent safe-state` (the unit's ExecStopPost=): the configured fan and cooler go safe
after the daemon died, through the real pty MCU simulator and a fake sysfs kernel."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.mcu import FAST_BRIDGE, FAST_FIRMWARE
from vehicle_agent.cli import main
from vehicle_agent.control.settings import (
    ControlConfig,
    McuConfig,
    McuFanConfig,
    SysfsPwmFanConfig,
)
from vehicle_agent.service.safe_state import make_safe

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

    from firmware_bridge.bridge import McuBridge
    from firmware_bridge.sim import FirmwareSimulator
    from tests.control.conftest import FakePwmKernel

MCU = {k: FAST_BRIDGE[k] for k in ("request_timeout_s", "retries", "poll_interval_s")}


async def test_safe_state_ends_the_fan_hold_and_switches_the_cooler_off(
    sim: FirmwareSimulator, bridge: McuBridge
) -> None:
    # What a daemon killed mid-cleaning leaves: fan full for 30 s, cooler on.
    await bridge.set_fan(1.0, 30.0)
    await bridge.set_cooler(enabled=True, setpoint_c=30.0, max_duration_s=30.0)
    await bridge.__aexit__(None, None, None)
    assert sim.state().fan_hold_s > 0
    config = ControlConfig(
        fan=McuFanConfig(),
        safe_duty=FAST_FIRMWARE.fan_safe_duty,
        mcu=McuConfig(port=sim.port, **MCU),
    )
    assert await make_safe(config) == []
    state = sim.state()
    assert state.fan_hold_s == 0.0
    assert not state.cooler_enabled


async def test_safe_state_without_the_module_says_so(tmp_path: Path) -> None:
    config = ControlConfig(
        fan=McuFanConfig(),
        mcu=McuConfig(port=str(tmp_path / "absent"), ready_timeout_s=0.2, **MCU),
    )
    (failed,) = await make_safe(config)
    assert "not reachable" in failed


async def test_safe_state_writes_the_safe_duty_to_a_sysfs_channel(kernel: FakePwmKernel) -> None:
    channel = kernel.export(0, 0)
    for name, value in (("period", "40000"), ("duty_cycle", "40000"), ("enable", "1")):
        (channel / name).write_text(value)
    assert kernel.duty(0, 0) == 1.0  # left at full duty by the dead daemon
    config = ControlConfig(fan=SysfsPwmFanConfig(chip=0, channel=0, root=kernel.root))
    assert await make_safe(config) == []
    assert kernel.duty(0, 0) == 0.0


def test_the_subcommand_exits_0_with_nothing_to_do(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text("[control.fan]\ndriver = 'none'\n")
    assert main(["safe-state", "--config", str(path)]) == 0


def test_run_refuses_the_simulated_fan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "agent.toml"
    path.write_text("[control.fan]\ndriver = 'simulated'\n")
    assert main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "driver 'simulated'" in err
    assert "only in `vehicle-agent simulate` and tests" in err
