"""Driver specifics beyond the contract: a backend that cannot load says why ("backend
unavailable: …"); sysfs PWM follows the kernel's rules (export, already exported, EBUSY, udev
delay, polarity, period order) and names the path in its errors; the MCU fan sends its duty
only from `refresh()`, with `max_duration`."""

from __future__ import annotations

import errno
import sys
from typing import TYPE_CHECKING

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from firmware_bridge import Fault
from tests.control.conftest import FakePwmKernel
from vehicle_agent.config_base import ConfigModel
from vehicle_agent.control.build import create_fan
from vehicle_agent.control.fan import FanError, FanUnavailableError, NoFan
from vehicle_agent.control.gpio_fan import GpioZeroFan
from vehicle_agent.control.mcu_fan import McuFan
from vehicle_agent.control.settings import (
    GpioZeroFanConfig,
    McuFanConfig,
    NoFanConfig,
    SimulatedFanConfig,
    SysfsPwmFanConfig,
)
from vehicle_agent.control.sysfs_fan import SysfsPwmError, SysfsPwmFan

if TYPE_CHECKING:
    from pathlib import Path

    from firmware_bridge.bridge import McuBridge
    from firmware_bridge.sim import FirmwareSimulator

# -- gpiozero -----------------------------------------------------------------------------------


def test_gpiozero_missing_library_is_backend_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gpiozero", None)  # makes `import gpiozero` fail
    with pytest.raises(FanUnavailableError, match="backend unavailable: cannot import gpiozero"):
        GpioZeroFan("GPIO18")


def test_gpiozero_default_factory_off_a_pi_is_backend_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """This machine is no Raspberry Pi: every real factory fails, and the reason lists them."""
    monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)
    with pytest.raises(FanUnavailableError, match="backend unavailable") as caught:
        GpioZeroFan("GPIO18")
    assert "native" in caught.value.reason


def test_gpiozero_unknown_named_factory_is_backend_unavailable() -> None:
    with pytest.raises(FanUnavailableError, match="no gpiozero pin factory named 'nosuch'"):
        GpioZeroFan("GPIO18", pin_factory="nosuch")


def test_gpiozero_named_factory_that_fails_here_is_backend_unavailable() -> None:
    with pytest.raises(FanUnavailableError, match="pin factory 'native' does not work here"):
        GpioZeroFan("GPIO18", pin_factory="native")


def test_gpiozero_bad_pin_and_pin_in_use_are_fan_errors() -> None:
    factory = MockFactory(pin_class=MockPWMPin)
    with pytest.raises(FanError, match="cannot drive GPIO GPIO99"):
        GpioZeroFan("GPIO99", pin_factory=factory)
    fan = GpioZeroFan("GPIO18", pin_factory=factory)
    with pytest.raises(FanError, match="in use"):
        GpioZeroFan("GPIO18", pin_factory=factory)
    fan.close()
    factory.close()


def test_gpiozero_frequency_active_low_and_safe_duty_at_start() -> None:
    factory = MockFactory(pin_class=MockPWMPin)
    fan = GpioZeroFan(
        "GPIO13", frequency_hz=250, active_high=False, pin_factory=factory, safe_duty=0.2
    )
    pin = factory.pin(13)
    assert pin.frequency == 250
    assert fan.duty == 0.2
    assert pin.state == pytest.approx(0.8)  # active low: the pin is low 20 % of the time
    fan.set_duty(1.0)
    assert pin.state == 0.0
    assert fan.readback() == 1.0
    fan.close()
    assert fan.readback() is None
    factory.close()


# -- sysfs PWM --------------------------------------------------------------------------------


def test_sysfs_exports_and_configures_in_the_kernel_order(kernel: FakePwmKernel) -> None:
    fan = SysfsPwmFan(0, 2, frequency_hz=25_000, safe_duty=0.1, root=kernel.root, attributes=kernel)
    assert not fan.adopted
    assert kernel.writes == [
        ("pwmchip0/export", "2"),
        ("pwmchip0/pwm2/period", "40000"),
        ("pwmchip0/pwm2/duty_cycle", "4000"),
        ("pwmchip0/pwm2/enable", "1"),
    ]
    fan.set_duty(0.75)
    assert kernel.duty(0, 2) == 0.75
    fan.close()
    assert kernel.duty(0, 2) == pytest.approx(0.1)  # left enabled at the safe duty


def test_sysfs_adopts_an_already_exported_channel(kernel: FakePwmKernel) -> None:
    """A restarted daemon finds its channel exported, enabled, with a longer period and a duty
    beyond the new period: the duty shrinks first, or the kernel refuses the period."""
    channel = kernel.export(0, 0)
    (channel / "period").write_text("1000000")
    (channel / "duty_cycle").write_text("900000")
    (channel / "enable").write_text("1")
    fan = SysfsPwmFan(0, 0, frequency_hz=25_000, root=kernel.root, attributes=kernel)
    assert fan.adopted
    assert ("pwmchip0/export", "0") not in kernel.writes
    assert kernel.writes[:2] == [
        ("pwmchip0/pwm0/duty_cycle", "0"),
        ("pwmchip0/pwm0/period", "40000"),
    ]
    assert kernel.duty(0, 0) == 0.0


def test_sysfs_polarity_changes_only_while_disabled(kernel: FakePwmKernel) -> None:
    channel = kernel.export(0, 1)
    (channel / "period").write_text("40000")
    (channel / "enable").write_text("1")
    SysfsPwmFan(0, 1, polarity="inversed", root=kernel.root, attributes=kernel)
    assert kernel.writes[:2] == [
        ("pwmchip0/pwm1/enable", "0"),
        ("pwmchip0/pwm1/polarity", "inversed"),
    ]
    assert (channel / "enable").read_text() == "1"


def test_sysfs_waits_for_udev_after_export(tmp_path: Path) -> None:
    from tests.control.conftest import FakePwmKernel  # noqa: PLC0415 - the class, not the fixture

    slow = FakePwmKernel(tmp_path / "pwm", udev_delay=True)
    fan = SysfsPwmFan(0, 0, root=slow.root, attributes=slow)
    assert slow.sleeps >= 1
    fan.set_duty(0.5)
    assert slow.duty(0, 0) == 0.5


def test_sysfs_channel_never_writable_times_out_naming_the_path(
    kernel: FakePwmKernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kernel, "writable", lambda _path: False)
    with pytest.raises(SysfsPwmError, match=r"pwm0/period: not writable 0.05 s after export") as e:
        SysfsPwmFan(0, 0, root=kernel.root, attributes=kernel, export_timeout_s=0.05)
    assert e.value.path == kernel.root / "pwmchip0" / "pwm0" / "period"
    assert e.value.errno == errno.EACCES


def test_sysfs_channel_claimed_by_a_kernel_driver_is_busy(tmp_path: Path) -> None:
    from tests.control.conftest import FakePwmKernel  # noqa: PLC0415 - the class, not the fixture

    claimed = FakePwmKernel(tmp_path / "pwm", claimed={(0, 3)})
    with pytest.raises(SysfsPwmError, match="channel 3 is busy: claimed by a kernel driver") as e:
        SysfsPwmFan(0, 3, root=claimed.root, attributes=claimed)
    assert e.value.path == claimed.root / "pwmchip0" / "export"
    assert e.value.errno == errno.EBUSY


def test_sysfs_missing_chip_names_the_path_and_what_exists(kernel: FakePwmKernel) -> None:
    with pytest.raises(
        FanUnavailableError, match=r"pwmchip7: no such PWM chip \(available: pwmchip0\)"
    ):
        SysfsPwmFan(7, 0, root=kernel.root, attributes=kernel)


def test_sysfs_missing_pwm_class_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(FanUnavailableError, match="available: none"):
        SysfsPwmFan(0, 0, root=tmp_path / "nothing")


def test_sysfs_channel_beyond_npwm_is_unavailable(kernel: FakePwmKernel) -> None:
    with pytest.raises(FanUnavailableError, match="has 4 channel"):
        SysfsPwmFan(0, 4, root=kernel.root, attributes=kernel)


def test_sysfs_write_refused_by_the_kernel_is_a_fan_error_naming_the_path(
    kernel: FakePwmKernel,
) -> None:
    fan = SysfsPwmFan(0, 0, root=kernel.root, attributes=kernel)
    (fan.channel_dir / "period").write_text("1000")  # another process shortened the period
    with pytest.raises(SysfsPwmError, match="duty_cycle: cannot write '20000'") as e:
        fan.set_duty(0.5)
    assert e.value.errno == errno.EINVAL
    assert fan.duty == 0.0  # not recorded as applied


def test_sysfs_reads_the_tach_from_hwmon(kernel: FakePwmKernel, tmp_path: Path) -> None:
    tach = tmp_path / "fan1_input"
    tach.write_text("4200\n")
    fan = SysfsPwmFan(0, 0, root=kernel.root, attributes=kernel, tach_path=tach)
    assert fan.tach_rpm == 4200.0
    tach.write_text("garbage")
    assert fan.tach_rpm is None


# -- the registry -------------------------------------------------------------------------------


def test_create_fan_builds_the_configured_driver(kernel: FakePwmKernel) -> None:
    # Issue 22: the registry no longer falls back to (or builds) the simulator's fan.
    with pytest.raises(FanUnavailableError, match="only in `vehicle-agent simulate` and tests"):
        create_fan(SimulatedFanConfig(), 0.1)
    assert isinstance(create_fan(NoFanConfig(), 0.1), NoFan)
    kernel.export(0, 0)  # the registry uses the real attribute I/O: no fake kernel to export
    sysfs = create_fan(SysfsPwmFanConfig(chip=0, channel=0, root=kernel.root), 0.0)
    assert isinstance(sysfs, SysfsPwmFan)
    with pytest.raises(FanUnavailableError, match="mcu: backend unavailable: no microcontroller"):
        create_fan(McuFanConfig(), 0.3)
    with pytest.raises(FanUnavailableError, match="backend unavailable"):
        create_fan(GpioZeroFanConfig(pin="GPIO18", pin_factory="native"), 0.0)


def test_the_registry_fails_closed_on_a_driver_it_does_not_know() -> None:
    class PwmFanConfig(ConfigModel):  # a driver added to the config but not to the registry
        driver: str = "pwm"

    with pytest.raises(FanUnavailableError, match=r"fan pwm: .*no such fan driver"):
        create_fan(PwmFanConfig(), 0.0)  # type: ignore[arg-type]


def _controller(kernel: FakePwmKernel, chip: int, name: str) -> None:
    """Link pwmchipN/device to a platform device named `name`, as the kernel does."""
    device = kernel.root.parent.parent / "devices" / "platform" / "bus@0" / name
    device.mkdir(parents=True)
    (kernel.root / f"pwmchip{chip}" / "device").symlink_to(device)


def test_a_header_pin_finds_its_controllers_chip_whatever_its_number(tmp_path: Path) -> None:
    kernel = FakePwmKernel(tmp_path / "sys" / "class" / "pwm", {0: 1, 3: 1, 4: 1})
    _controller(kernel, 0, "32f0000.pwm")
    _controller(kernel, 3, "32c0000.pwm")  # Orin Nano header pin 33 (PWM5)
    _controller(kernel, 4, "3280000.pwm")
    kernel.export(3, 0)
    config = SysfsPwmFanConfig(board="orin-nano", pin=33, root=kernel.root)
    fan = create_fan(config, 0.0)
    assert isinstance(fan, SysfsPwmFan)
    assert fan.chip_dir == kernel.root / "pwmchip3"
    assert fan.channel == 0


def test_a_header_pin_whose_controller_is_absent_says_to_mux_it(tmp_path: Path) -> None:
    kernel = FakePwmKernel(tmp_path / "sys" / "class" / "pwm", {0: 1})
    _controller(kernel, 0, "32f0000.pwm")
    config = SysfsPwmFanConfig(board="agx-orin", pin=18, root=kernel.root)
    with pytest.raises(FanUnavailableError, match=r"32c0000\.pwm .*jetson-io"):
        create_fan(config, 0.0)


# -- the microcontroller ------------------------------------------------------------------------


async def test_mcu_fan_sends_only_on_refresh_with_max_duration(
    sim: FirmwareSimulator, bridge: McuBridge
) -> None:
    fan = McuFan(bridge, safe_duty=0.3)
    fan.set_duty(0.8)
    assert sim.state().fan_duty == 0.3  # nothing sent yet: set_duty only records
    await fan.refresh(0.5)
    state = sim.state()
    assert state.fan_duty == 0.8
    assert 0.3 < state.fan_hold_s <= 0.5
    assert fan.sent == 0.8


async def test_mcu_fan_refresh_failure_is_a_fan_error(
    sim: FirmwareSimulator, bridge: McuBridge
) -> None:
    fan = McuFan(bridge, safe_duty=0.3)
    sim.faults.silence = True
    fan.set_duty(0.6)
    with pytest.raises(FanError, match=r"set_fan 0\.600 not acknowledged"):
        await fan.refresh(1.0)
    assert sim.state().fan_duty == 0.6  # carried out, only the reply was lost
    sim.faults.silence = False


async def test_mcu_fan_reports_tach_and_the_firmware_applied_duty(
    sim: FirmwareSimulator, bridge: McuBridge
) -> None:
    fan = McuFan(bridge, safe_duty=0.3)
    sim.faults.overtemp = True  # the firmware's own protection will force the fan to full
    sim.plant.hot_c = 75.0
    await bridge.next_telemetry(1.0)
    await bridge.next_telemetry(1.0)
    assert fan.readback() == 1.0
    snapshot = bridge.latest()
    assert snapshot is not None
    assert Fault.HOT_OVERTEMP in snapshot.telemetry.faults
    rpm = fan.tach_rpm
    assert rpm is not None
    assert rpm > 0
    sim.faults.overtemp = False


async def test_mcu_fan_safe_duty_mismatch_is_logged_once(
    bridge: McuBridge, caplog: pytest.LogCaptureFixture
) -> None:
    fan = McuFan(bridge, safe_duty=0.0)
    await fan.refresh(1.0)
    await fan.refresh(1.0)
    warnings = [r for r in caplog.records if "differs from the firmware" in r.message]
    assert len(warnings) == 1
