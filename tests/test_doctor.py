"""`vehicle-agent doctor`: one line per backend, camera, fan driver and MCU link, OK/WARN/FAIL with
the reason, exit 1 when the config needs something missing. Run here, where TensorRT and CSI
cameras are absent (it must say so), against the firmware simulator on a real pty, a fake sysfs
PWM tree, gpiozero's mock pins, real GStreamer tools and faked TensorRT modules."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.control.conftest import FakePwmKernel
from tests.enhance import fake_tensorrt
from tests.enhance.fake_tensorrt import FakeGpu
from tests.mcu import FAST_BRIDGE, FAST_FIRMWARE, no_simulator_left_running, sim
from vehicle_agent.cli import main
from vehicle_agent.config import CaptureConfig, load_config, parse_config
from vehicle_agent.control.settings import (
    ControlConfig,
    GpioZeroFanConfig,
    McuConfig,
    McuFanConfig,
    SysfsPwmFanConfig,
)
from vehicle_agent.service.doctor import (
    Finding,
    Probes,
    camera_findings,
    diagnose,
    enhance_findings,
    failed,
    fan_findings,
    mcu_findings,
    pipeline_elements,
    platform_findings,
)
from vehicle_agent.sim.simulate import sample_video

if TYPE_CHECKING:
    from firmware_bridge.sim import FirmwareSimulator

__all__ = ["no_simulator_left_running", "sim"]
"""The firmware simulator's fixtures (tests/mcu.py)."""

MCU = {k: FAST_BRIDGE[k] for k in ("request_timeout_s", "retries", "poll_interval_s")}
GST = shutil.which("gst-inspect-1.0") is not None
needs_gst = pytest.mark.skipif(not GST, reason="gst-inspect-1.0 not installed")


def probes(tmp_path: Path, **changes: Any) -> Probes:
    """Probes of a machine that is no Jetson (no release file, no nvargus-daemon)."""
    base = Probes(tmp_path / "no-release", tmp_path / "no-argus-socket", mcu_timeout_s=2.0)
    return dataclasses.replace(base, **changes)


def of(findings: list[Finding], area: str, subject: str | None = None) -> list[Finding]:
    return [f for f in findings if f.area == area and subject in (None, f.subject)]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(f'[agent]\nstate_dir = "{tmp_path}/state"\n{text}')
    return path


def test_every_finding_is_one_line_with_a_level() -> None:
    config = load_config(Path(__file__).parent.parent / "systemd" / "vehicle-agent.toml")
    findings = diagnose(config, Probes(query_mcu=False))
    assert findings
    for finding in findings:
        assert finding.level in {"OK", "WARN", "FAIL"}
        assert "\n" not in finding.line()
        assert finding.line().startswith(f"{finding.level:<4} {finding.area} ")


def test_the_shipped_vehicle_config_here_names_what_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No TensorRT, no CSI camera, no module here: each is a FAIL that says why; exit 1."""
    shipped = (Path(__file__).parent.parent / "systemd" / "vehicle-agent.toml").read_text()
    port = tmp_path / "ttyACM0"
    path = tmp_path / "vehicle.toml"
    path.write_text(
        shipped.replace('"/var/lib/vehicle-agent"', f'"{tmp_path}/state"').replace(
            '"/dev/ttyACM0"', f'"{port}"'
        )
    )
    assert main(["doctor", "--config", str(path), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert not report["ok"]
    by = {(c["area"], c["subject"], c["detail"]): c["level"] for c in report["checks"]}
    fails = [detail for (_, _, detail), level in by.items() if level == "FAIL"]
    assert any("python3-libnvinfer" in d for d in fails)  # tensorrt: not installed, from JetPack
    assert any(f"no {port}" in d for d in fails)
    if GST:
        assert any("no GStreamer element nvarguscamerasrc" in d for d in fails)
    assert report["counts"]["FAIL"] == len(fails)


def test_a_bench_config_with_the_simulated_module_passes(
    sim: FirmwareSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        f"""
[capture]
uri = "file://{sample_video()}"

[[enhance.chain]]
type = "onnxruntime"
device = "auto"

[[enhance.chain]]
type = "classical"

[control]
safe_duty = {FAST_FIRMWARE.fan_safe_duty}

[control.fan]
driver = "mcu"

[control.mcu]
port = "{sim.port}"
request_timeout_s = 0.25
""",
    )
    assert main(["doctor", "--config", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    mcu = [line for line in out if line.split()[1:2] == ["mcu"]]
    assert mcu[0] == f"OK   mcu {sim.port}: port exists, readable and writable"
    assert mcu[1].startswith(f"OK   mcu {sim.port}: firmware ")
    assert "sensor " in mcu[1]
    assert "faults none" in mcu[1]
    onnx = next(line for line in out if " enhance onnxruntime:" in line)
    assert "loaded fast-enhance@" in onnx  # the real onnxruntime ran the shipped model
    assert any(" camera file://" in line and "video file" in line for line in out)
    assert out[-1].startswith("doctor: ")
    assert "0 FAIL" in out[-1]


def test_a_firmware_safe_duty_other_than_the_configs_is_warned_about(
    sim: FirmwareSimulator, tmp_path: Path
) -> None:
    control = ControlConfig(fan=McuFanConfig(), safe_duty=0.0, mcu=McuConfig(port=sim.port, **MCU))
    findings = mcu_findings(control, probes(tmp_path))
    (warn,) = [f for f in findings if f.level == "WARN"]
    assert "fan_safe_duty is 0.3 but [control] safe_duty is 0" in warn.detail


def test_a_module_that_does_not_answer_fails_within_the_timeout(tmp_path: Path) -> None:
    master, slave = os.openpty()  # a real serial port nobody answers on
    try:
        control = ControlConfig(
            fan=McuFanConfig(), mcu=McuConfig(port=os.ttyname(slave), ready_timeout_s=0.2, **MCU)
        )
        findings = mcu_findings(control, probes(tmp_path, mcu_timeout_s=0.3))
    finally:
        os.close(master)
        os.close(slave)
    assert [f.level for f in findings] == ["OK", "FAIL"]
    assert findings[1].detail.startswith("no answer within 0.3 s: ")


def test_without_query_only_the_port_is_checked(tmp_path: Path) -> None:
    master, slave = os.openpty()
    try:
        control = ControlConfig(fan=McuFanConfig(), mcu=McuConfig(port=os.ttyname(slave), **MCU))
        findings = mcu_findings(control, probes(tmp_path, query_mcu=False))
    finally:
        os.close(master)
        os.close(slave)
    assert [f.level for f in findings] == ["OK"]


def test_no_mcu_section_is_a_warning(tmp_path: Path) -> None:
    (finding,) = mcu_findings(ControlConfig(), probes(tmp_path))
    assert finding.level == "WARN"
    assert "no [control.mcu]" in finding.detail


# -- platform -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first_line", "level", "words"),
    [
        (
            "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic",
            "OK",
            "R36.4.3 (JetPack 6.2)",
        ),
        ("# R39 (release), REVISION: 2.0, GCID: 1, BOARD: generic", "OK", "R39.2.0 (JetPack 7.2)"),
        (
            "# R35 (release), REVISION: 6.0, GCID: 1, BOARD: t186ref",
            "WARN",
            "not a supported release",
        ),
        ("something else", "WARN", "no L4T release in 'something else'"),
    ],
)
def test_the_l4t_release_is_read_and_judged(
    tmp_path: Path, first_line: str, level: str, words: str
) -> None:
    release = tmp_path / "nv_tegra_release"
    release.write_text(first_line + "\n")
    (jetson,) = of(
        platform_findings(probes(tmp_path, nv_tegra_release=release)), "platform", "jetson"
    )
    assert jetson.level == level
    assert words in jetson.detail


def test_off_a_jetson_the_platform_says_so(tmp_path: Path) -> None:
    findings = platform_findings(probes(tmp_path))
    (jetson,) = of(findings, "platform", "jetson")
    assert jetson.level == "WARN"
    assert "not a Jetson" in jetson.detail
    (opencv,) = of(findings, "platform", "opencv")
    assert "GStreamer" in opencv.detail


# -- enhancement --------------------------------------------------------------------------------


def chain(tmp_path: Path, backends: str) -> list[Finding]:
    config = parse_config(
        {
            "agent": {"state_dir": str(tmp_path / "state")},
            "enhance": {"chain": json.loads(backends)},
        }
    )
    return enhance_findings(config)


def test_tensorrt_absent_is_a_failure_only_when_the_chain_names_it(tmp_path: Path) -> None:
    named = of(chain(tmp_path, '[{"type": "tensorrt"}, {"type": "classical"}]'), "enhance")
    unnamed = of(chain(tmp_path, '[{"type": "classical"}]'), "enhance")
    (trt,) = [f for f in named if f.subject == "tensorrt"]
    assert trt.level == "FAIL"
    assert "JetPack (python3-libnvinfer)" in trt.detail
    (trt_unused,) = [f for f in unnamed if f.subject == "tensorrt"]
    assert trt_unused.level == "WARN"
    assert "(not in the chain)" in trt_unused.detail
    assert {f.subject for f in named} >= {"tensorrt", "pycuda", "onnxruntime", "classical"}


def test_onnxruntime_asked_for_cuda_without_its_provider_fails(tmp_path: Path) -> None:
    (ort,) = of(
        chain(tmp_path, '[{"type": "onnxruntime", "device": "cuda"}]'), "enhance", "onnxruntime"
    )
    assert ort.level == "FAIL"
    assert "no CUDA execution provider" in ort.detail


def test_a_missing_model_fails_naming_it(tmp_path: Path) -> None:
    config = parse_config(
        {
            "agent": {"state_dir": str(tmp_path / "state")},
            "enhance": {"model": "no-such-model", "chain": [{"type": "onnxruntime"}]},
        }
    )
    (model,) = of(enhance_findings(config), "enhance", "model no-such-model")
    assert model.level == "FAIL"
    assert "no-such-model" in model.detail


@pytest.fixture
def fake_trt(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], FakeGpu]]:
    """`fake_trt(version)`: TensorRT and pycuda faked on an 'Orin' (tests/enhance/fake_tensorrt.py)."""
    yield lambda version: fake_tensorrt.install(monkeypatch, version)
    fake_tensorrt.uninstall()


def test_tensorrt_10_3_reports_its_flags_gpu_and_engine(
    tmp_path: Path, fake_trt: Callable[[str], FakeGpu]
) -> None:
    fake_trt("10.3.0")
    findings = of(chain(tmp_path, '[{"type": "tensorrt", "precision": "fp16"}]'), "enhance")
    (trt,) = [f for f in findings if f.subject == "tensorrt"]
    assert (trt.level, trt.detail) == ("OK", "TensorRT 10.3.0: fp16 builds weakly typed FP16")
    (cuda,) = [f for f in findings if f.subject == "pycuda"]
    assert cuda.level == "OK"
    assert cuda.detail.startswith("CUDA device 0: ")
    (engine,) = [f for f in findings if f.subject.startswith("engine fast-enhance@")]
    assert engine.level == "OK"
    assert engine.detail.startswith("not built yet: TensorRT engine build")


def test_int8_on_tensorrt_11_fails_saying_why(
    tmp_path: Path, fake_trt: Callable[[str], FakeGpu]
) -> None:
    fake_trt("11.0.0")
    frames = tmp_path / "frames"
    frames.mkdir()
    backends = json.dumps(
        [{"type": "tensorrt", "precision": "int8", "calibration_dir": str(frames)}]
    )
    (trt,) = of(chain(tmp_path, backends), "enhance", "tensorrt")
    assert trt.level == "FAIL"
    assert "INT8 calibration not available on TensorRT 11.0.0" in trt.detail


# -- camera -------------------------------------------------------------------------------------


def capture(uri: str, **extra: object) -> CaptureConfig:
    return parse_config({"capture": {"uri": uri, **extra}}).capture


def test_a_missing_v4l2_device_fails(tmp_path: Path) -> None:
    (finding,) = camera_findings(capture(f"v4l2://{tmp_path}/video9"), probes(tmp_path))
    assert finding.level == "FAIL"
    assert f"no device {tmp_path}/video9" in finding.detail


def test_a_v4l2_path_that_is_no_device_fails(tmp_path: Path) -> None:
    (tmp_path / "video0").write_text("")
    (finding,) = camera_findings(capture(f"v4l2://{tmp_path}/video0"), probes(tmp_path))
    assert "not a character device" in finding.detail


def test_a_character_device_is_accepted() -> None:
    (finding,) = camera_findings(capture("v4l2:///dev/null"), Probes())
    assert finding.level == "OK"


def test_image_folders_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"")
    (folder,) = camera_findings(capture(str(tmp_path)), probes(tmp_path))
    assert (folder.level, folder.detail) == ("OK", "image folder, 1 image(s)")
    (missing,) = camera_findings(capture(f"file://{tmp_path}/gone.mp4"), probes(tmp_path))
    assert missing.level == "FAIL"


@needs_gst
def test_a_gst_pipeline_is_checked_element_by_element(tmp_path: Path) -> None:
    uri = "gst://videotestsrc num-buffers=5 ! video/x-raw,width=64 ! nosuchelement ! videoconvert"
    findings = camera_findings(capture(uri, gst_backend="subprocess"), probes(tmp_path))
    levels = {f.detail: f.level for f in findings}
    assert levels["GStreamer element videotestsrc is installed"] == "OK"
    assert levels["GStreamer element videoconvert is installed"] == "OK"
    assert levels["no GStreamer element nosuchelement"] == "FAIL"
    assert not any("video/x-raw" in d for d in levels)


@needs_gst
def test_csi_without_jetpack_says_what_is_missing(tmp_path: Path) -> None:
    findings = camera_findings(capture("csi://0"), probes(tmp_path))
    details = [f.detail for f in failed(findings)]
    assert "no GStreamer element nvarguscamerasrc (JetPack's nvidia-l4t-gstreamer)" in details
    assert any("nvargus-daemon is not running" in d for d in details)
    socket = tmp_path / "argus_socket"
    socket.write_text("")
    findings = camera_findings(capture("csi://0"), probes(tmp_path, argus_socket=socket))
    assert f"nvargus-daemon listens ({socket})" in [f.detail for f in findings if f.level == "OK"]


def test_opencv_without_gstreamer_fails_when_the_config_insists(tmp_path: Path) -> None:
    from vehicle_agent.capture.opencv import opencv_has_gstreamer  # noqa: PLC0415

    if opencv_has_gstreamer():
        pytest.skip("this cv2 has GStreamer")
    findings = camera_findings(
        capture("gst://videotestsrc", gst_backend="opencv"), probes(tmp_path)
    )
    assert findings[0].level == "FAIL"
    assert "this cv2 has no GStreamer" in findings[0].detail


def test_pipeline_elements_leave_out_caps_and_properties() -> None:
    pipeline = (
        "nvarguscamerasrc sensor-id=0 ! video/x-raw(memory:NVMM),width=1280 ! nvvidconv ! queue"
    )
    assert pipeline_elements(pipeline) == ["nvarguscamerasrc", "nvvidconv", "queue"]


# -- fan ----------------------------------------------------------------------------------------


def test_a_sysfs_channel_that_can_be_exported_is_ok(tmp_path: Path) -> None:
    kernel = FakePwmKernel(tmp_path / "pwm", {0: 4})
    (finding,) = fan_findings(
        ControlConfig(fan=SysfsPwmFanConfig(chip=0, channel=1, root=kernel.root))
    )
    assert finding.level == "OK"
    assert "channel 1 can be exported" in finding.detail
    assert not (kernel.root / "pwmchip0" / "pwm1").exists()  # nothing exported by the doctor


def test_an_exported_sysfs_channel_is_checked_for_writes(tmp_path: Path) -> None:
    kernel = FakePwmKernel(tmp_path / "pwm", {0: 4})
    kernel.export(0, 2)
    (finding,) = fan_findings(
        ControlConfig(fan=SysfsPwmFanConfig(chip=0, channel=2, root=kernel.root))
    )
    assert (finding.level, finding.detail.endswith("exported and writable")) == ("OK", True)


def test_sysfs_absent_chip_channel_and_unmuxed_pin_fail(tmp_path: Path) -> None:
    kernel = FakePwmKernel(tmp_path / "pwm", {0: 1})
    for fan, words in (
        (SysfsPwmFanConfig(chip=3, root=kernel.root), "no " + str(kernel.root / "pwmchip3")),
        (SysfsPwmFanConfig(chip=0, channel=1, root=kernel.root), "has 1 channel(s), not 1"),
        (
            SysfsPwmFanConfig(board="orin-nano", pin=33, root=kernel.root),
            "no PWM chip of controller 32c0000.pwm",
        ),
    ):
        (finding,) = fan_findings(ControlConfig(fan=fan))
        assert finding.level == "FAIL"
        assert words in finding.detail


def test_gpiozero_with_the_mock_pin_factory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    (finding,) = fan_findings(ControlConfig(fan=GpioZeroFanConfig(pin="GPIO18")))
    assert (finding.level, finding.detail) == ("OK", "pin factory MockFactory for pin GPIO18")


def test_gpiozero_off_a_raspberry_pi_fails_pointing_at_sysfs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)
    (finding,) = fan_findings(
        ControlConfig(fan=GpioZeroFanConfig(pin="GPIO18", pin_factory="native"))
    )
    assert finding.level == "FAIL"
    assert "on a Jetson use driver 'sysfs'" in finding.detail


def test_no_real_fan_is_a_warning_and_the_simulated_one_a_failure() -> None:
    (none,) = fan_findings(ControlConfig())
    assert none.level == "WARN"
    (simulated,) = fan_findings(ControlConfig.model_validate({"fan": {"driver": "simulated"}}))
    assert simulated.level == "FAIL"


def test_a_bad_mcu_timeout_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "")
    assert main(["doctor", "--config", str(path), "--mcu-timeout", "0"]) == 2
    assert "--mcu-timeout 0: expected 0.1 to 30 s" in capsys.readouterr().err
