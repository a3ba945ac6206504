"""Service: `vehicle-agent doctor` — what this machine can do of what the config asks, and why not.

One `Finding` per thing checked, each OK, WARN or FAIL with one line of reason: the platform
(Python, L4T/JetPack release, OpenCV and its GStreamer), every enhancement backend (onnxruntime
and its providers, TensorRT's version, builder flags for the configured precision, the CUDA
device through pycuda and whether the engine is cached, the models), the camera source
(GStreamer in cv2 or gst-launch-1.0, the pipeline's elements, nvarguscamerasrc and
nvargus-daemon's socket, V4L2 device nodes, files), the fan driver (sysfs PWM chip, channel and
permissions; gpiozero's pin factory) and the MCU link (the port, and with `query` the module's
identity and one telemetry sample).

FAIL means the config needs it and it cannot work here (the CLI exits 1); WARN is what the
config does not need, or what works in a lesser way (onnxruntime on the CPU). Nothing is driven:
no PWM channel is exported, no pin is claimed, no duty is written. Asking the MCU opens its
serial port, so run the doctor with the service stopped (or without `query`). Libraries are
reached through the backend modules that own them (`tensorrt_backend`, `onnxruntime_backend`,
`gpio_fan`), so a missing one is a finding, never an import error here.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import shutil
import stat
import subprocess
import sys
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from firmware_bridge import McuError
from vehicle_agent import compat
from vehicle_agent.config import (
    GATE_WORDS,
    MODEL_BACKENDS,
    CaptureConfig,
    Config,
    EnhancerConfig,
    OnnxRuntimeEnhancerConfig,
    TensorRtEnhancerConfig,
)
from vehicle_agent.control.build import NO_REAL_FAN, SIMULATED_REFUSED, open_bridge
from vehicle_agent.control.fan import FanError
from vehicle_agent.control.jetson_pins import JETSON_PWM_PINS
from vehicle_agent.control.settings import (
    ControlConfig,
    GpioZeroFanConfig,
    McuFanConfig,
    NoFanConfig,
    SimulatedFanConfig,
    SysfsPwmFanConfig,
)

Level = Literal["OK", "WARN", "FAIL"]
LEVELS: tuple[Level, ...] = ("OK", "WARN", "FAIL")
BACKENDS = ("tensorrt", "onnxruntime", "classical", "passthrough")
"""Every enhancement backend, reported whether or not the chain names it."""

SUPPORTED_L4T = {(36, 4): ("6.2", 3), (39, 2): ("7.2", 0)}
"""(L4T major, minor) → (JetPack, least patch): what tools/install-jetson.sh installs on."""
_RELEASE = re.compile(r"^#\s*R(\d+)\s*\(release\),\s*REVISION:\s*(\d+)\.(\d+)")
_CAPS = re.compile(r"^[a-z]+/[A-Za-z0-9_.+-]+")
"""A caps filter in a pipeline (video/x-raw, image/jpeg), not an element."""


@dataclass(frozen=True, slots=True)
class Finding:
    """One line of the report."""

    area: Literal["platform", "enhance", "camera", "fan", "mcu"]
    subject: str
    level: Level
    detail: str

    def line(self) -> str:
        return f"{self.level:<4} {self.area} {self.subject}: {self.detail}"


@dataclass(frozen=True, slots=True)
class Probes:
    """Where the doctor looks; tests point these at fakes."""

    nv_tegra_release: Path = Path("/etc/nv_tegra_release")
    argus_socket: Path = Path("/tmp/argus_socket")  # noqa: S108 - nvargus-daemon's, not ours
    gst_inspect: str = "gst-inspect-1.0"
    gst_launch: str = "gst-launch-1.0"
    query_mcu: bool = True
    """Open the MCU's port and ask it for its identity and a telemetry sample."""
    mcu_timeout_s: float = 2.0


def _needs(needed: bool, ok: bool) -> Level:
    return "OK" if ok else "FAIL" if needed else "WARN"


def _installed(name: str) -> bool:
    """Whether module `name` can be found, without importing it."""
    if name in sys.modules:
        return True
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def diagnose(config: Config, probes: Probes | None = None) -> list[Finding]:
    """Every finding for `config` on this machine (blocking; asks the MCU on its own loop)."""
    probes = probes or Probes()
    findings = platform_findings(probes)
    findings += enhance_findings(config)
    findings += camera_findings(config.capture, probes)
    findings += fan_findings(config.control)
    findings += mcu_findings(config.control, probes)
    return findings


def failed(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.level == "FAIL"]


def report_dict(findings: list[Finding], config_path: Path | None = None) -> dict[str, Any]:
    """JSON-ready: `ok` is False when anything the config needs failed."""
    counts = {level: sum(f.level == level for f in findings) for level in LEVELS}
    return {
        "config": None if config_path is None else str(config_path),
        "ok": counts["FAIL"] == 0,
        "counts": counts,
        "checks": [asdict(f) for f in findings],
    }


def summary_line(findings: list[Finding]) -> str:
    counts = {level: sum(f.level == level for f in findings) for level in LEVELS}
    if counts["FAIL"]:
        verdict = "the config needs what FAILed"
    elif counts["WARN"]:
        verdict = "everything the config needs is here (WARN: degraded or unused)"
    else:
        verdict = "everything the config needs is here"
    return f"doctor: {counts['OK']} OK, {counts['WARN']} WARN, {counts['FAIL']} FAIL: {verdict}"


# -- platform ---------------------------------------------------------------------------------


def l4t_release(path: Path) -> tuple[int, int, int] | None:
    """(major, minor, patch) from an /etc/nv_tegra_release first line; None without the file.
    Raises ValueError for a file that names no release."""
    try:
        first = path.read_text(encoding="utf-8", errors="replace").splitlines()[:1]
    except FileNotFoundError:
        return None
    match = _RELEASE.match(first[0] if first else "")
    if match is None:
        raise ValueError(f"{path}: no L4T release in {first[0] if first else ''!r}")
    major, minor, patch = (int(g) for g in match.groups())
    return major, minor, patch


def jetpack_of(release: tuple[int, int, int]) -> str | None:
    """The supported JetPack of an L4T release, or None when the installer refuses it."""
    major, minor, patch = release
    supported = SUPPORTED_L4T.get((major, minor))
    if supported is None or patch < supported[1]:
        return None
    return supported[0]


def platform_findings(probes: Probes) -> list[Finding]:
    version = "{}.{}.{}".format(*sys.version_info[:3])
    findings = [Finding("platform", "python", "OK", f"Python {version} ({sys.executable})")]
    try:
        release = l4t_release(probes.nv_tegra_release)
    except (OSError, ValueError) as exc:
        findings.append(Finding("platform", "jetson", "WARN", _one_line(exc)))
        release = None
    else:
        if release is None:
            detail = (
                f"not a Jetson (no {probes.nv_tegra_release}): tensorrt and csi:// need "
                "JetPack 6.2 or 7.2"
            )
            findings.append(Finding("platform", "jetson", "WARN", detail))
    if release is not None:
        text = "L4T R{}.{}.{}".format(*release)
        jetpack = jetpack_of(release)
        if jetpack is None:
            detail = f"{text}: not a supported release (JetPack 6.2: R36.4.3+, 7.2: R39.2)"
            findings.append(Finding("platform", "jetson", "WARN", detail))
        else:
            findings.append(Finding("platform", "jetson", "OK", f"{text} (JetPack {jetpack})"))
    import cv2  # noqa: PLC0415 - the version only; capture owns what cv2 reads

    from vehicle_agent.capture.opencv import opencv_has_gstreamer  # noqa: PLC0415

    where = Path(cv2.__file__ or "?").parent
    gst = "with GStreamer" if opencv_has_gstreamer() else "without GStreamer (PyPI's wheel?)"
    findings.append(
        Finding("platform", "opencv", "OK", f"OpenCV {cv2.__version__} from {where}, {gst}")
    )
    return findings


# -- enhancement ------------------------------------------------------------------------------


def enhance_findings(config: Config) -> list[Finding]:
    enhance = config.enhance
    chain: dict[str, EnhancerConfig] = {}
    for backend in enhance.chain:
        chain.setdefault(backend.type, backend)
    findings: list[Finding] = []
    refs, model_findings = _models(config, any(t in MODEL_BACKENDS for t in chain))
    findings += model_findings
    for name in BACKENDS:
        needed = name in chain
        if name == "tensorrt":
            cfg = chain.get(name)
            trt_cfg = cfg if isinstance(cfg, TensorRtEnhancerConfig) else TensorRtEnhancerConfig()
            findings += _tensorrt(trt_cfg, needed, refs, config.agent.state_dir)
        elif name == "onnxruntime":
            cfg = chain.get(name)
            ort_cfg = (
                cfg if isinstance(cfg, OnnxRuntimeEnhancerConfig) else OnnxRuntimeEnhancerConfig()
            )
            findings.append(_onnxruntime(ort_cfg, needed, refs, config.agent.state_dir))
        else:
            use = "in the chain" if needed else "not in the chain"
            findings.append(Finding("enhance", name, "OK", f"needs only OpenCV/numpy ({use})"))
    return findings


def _models(config: Config, needed: bool) -> tuple[list[Any], list[Finding]]:
    """The configured models, verified (sha256) — first the one the chain starts with."""
    from vehicle_agent.enhance.manifest import ManifestError  # noqa: PLC0415
    from vehicle_agent.enhance.store import (  # noqa: PLC0415
        ModelNotFoundError,
        ModelStore,
        default_dirs,
    )

    enhance = config.enhance
    gated = {v for v in enhance.gating.values() if v not in GATE_WORDS} - {enhance.model}
    names = [enhance.model, *sorted(gated)]
    store = ModelStore(default_dirs(config.agent.state_dir, enhance.model_dirs))
    refs: list[Any] = []
    findings: list[Finding] = []
    for name in names:
        try:
            ref = store.resolve(name)
        except (ModelNotFoundError, ManifestError, OSError) as exc:
            findings.append(
                Finding("enhance", f"model {name}", _needs(needed, ok=False), _one_line(exc))
            )
            continue
        refs.append(ref)
        findings.append(
            Finding("enhance", f"model {name}", "OK", f"{ref.label} in {ref.directory} (verified)")
        )
    return refs, findings


def _tensorrt(
    cfg: TensorRtEnhancerConfig, needed: bool, refs: list[Any], state_dir: Path
) -> list[Finding]:
    level_if_missing: Level = "FAIL" if needed else "WARN"
    use = "" if needed else " (not in the chain)"
    missing = [m for m in ("tensorrt", "pycuda") if not _installed(m)]
    if "tensorrt" in missing:
        detail = (
            "not installed for this Python: on a Jetson it comes from JetPack "
            "(python3-libnvinfer) and a venv needs --system-site-packages" + use
        )
        findings = [Finding("enhance", "tensorrt", level_if_missing, detail)]
    else:
        findings = []
    if "pycuda" in missing:
        detail = "not installed: pip install pycuda, built against /usr/local/cuda" + use
        findings.append(Finding("enhance", "pycuda", level_if_missing, detail))
    if missing:
        return findings
    try:
        backend = importlib.import_module("vehicle_agent.enhance.tensorrt_backend")
    except ImportError as exc:
        return [Finding("enhance", "tensorrt", level_if_missing, _one_line(exc) + use)]
    from vehicle_agent.enhance.base import EnhancerError  # noqa: PLC0415

    version = backend.TENSORRT_VERSION
    try:
        flags = backend.build_flags(cfg.precision)
    except EnhancerError as exc:
        findings.append(Finding("enhance", "tensorrt", level_if_missing, f"{version}: {exc}"))
    else:
        notes = "".join(f"; {note}" for note in flags.notes)
        detail = f"TensorRT {version}: {cfg.precision} builds {flags.describe()}{notes}{use}"
        findings.append(Finding("enhance", "tensorrt", "OK", detail))
    try:
        name, capability = backend.gpu_identity(cfg.device)
    except EnhancerError as exc:
        findings.append(Finding("enhance", "pycuda", level_if_missing, _one_line(exc)))
        return findings
    findings.append(
        Finding(
            "enhance", "pycuda", "OK", f"CUDA device {cfg.device}: {name}, compute {capability}"
        )
    )
    for ref in refs if needed else []:
        try:
            enhancer = backend.TensorRtEnhancer(cfg, model=ref, state_dir=state_dir)
            why = enhancer.preparation_needed()
        except EnhancerError as exc:
            findings.append(Finding("enhance", f"engine {ref.label}", "FAIL", _one_line(exc)))
            continue
        detail = "cached" if why is None else f"not built yet: {why} on the first start"
        findings.append(Finding("enhance", f"engine {ref.label}", "OK", detail))
    return findings


def _onnxruntime(
    cfg: OnnxRuntimeEnhancerConfig, needed: bool, refs: list[Any], state_dir: Path
) -> Finding:
    from vehicle_agent.enhance.base import EnhancerError, create_enhancer  # noqa: PLC0415

    use = "" if needed else " (not in the chain)"
    try:
        module = importlib.import_module("vehicle_agent.enhance.onnxruntime_backend")
        ort = module._import_ort()
        available = list(ort.get_available_providers())
        module.providers_for(cfg.device, available)
    except (ImportError, EnhancerError) as exc:
        return Finding("enhance", "onnxruntime", _needs(needed, ok=False), _one_line(exc) + use)
    cuda = "CUDAExecutionProvider" in available
    level: Level = "OK" if cuda or cfg.device == "cpu" else "WARN"
    detail = f"onnxruntime {ort.__version__}, providers {', '.join(available)}"
    if not cuda and cfg.device == "auto":
        detail += " (no CUDA provider: runs on the CPU)"
    if needed and refs:
        enhancer = create_enhancer(cfg, model=refs[0], state_dir=state_dir)
        try:
            enhancer.load()
        except EnhancerError as exc:
            return Finding("enhance", "onnxruntime", "FAIL", f"{detail}; {_one_line(exc)}")
        finally:
            enhancer.close()
        used = ", ".join(getattr(enhancer, "providers", [])) or "?"
        detail += f"; loaded {refs[0].label} on {used}"
    return Finding("enhance", "onnxruntime", level, detail + use)


# -- camera -----------------------------------------------------------------------------------


def camera_findings(capture: CaptureConfig, probes: Probes) -> list[Finding]:
    uri = capture.uri
    subject = uri if len(uri) <= 60 else uri[:57] + "…"
    scheme, sep, target = uri.partition("://")
    scheme = scheme.lower() if sep else "file"
    target = target if sep else uri
    if scheme == "file":
        path = Path(target)
        if path.is_dir():
            from vehicle_agent.capture.folder import IMAGE_SUFFIXES  # noqa: PLC0415

            images = sum(1 for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            level: Level = "OK" if images else "FAIL"
            return [Finding("camera", subject, level, f"image folder, {images} image(s)")]
        if path.is_file():
            size = path.stat().st_size
            return [Finding("camera", subject, "OK", f"video file, {size} bytes")]
        return [Finding("camera", subject, "FAIL", f"no such file or folder: {path}")]
    if scheme == "v4l2":
        return [_device(subject, Path(target))]
    from vehicle_agent.capture.uri import csi_pipeline  # noqa: PLC0415

    if scheme == "csi" and not target.isdigit():
        return [Finding("camera", subject, "FAIL", "expected csi://N, N the sensor id")]
    pipeline = csi_pipeline(int(target), capture) if scheme == "csi" else target
    findings = [_gst_runner(subject, capture, probes)]
    findings += [_element(subject, name, probes) for name in pipeline_elements(pipeline)]
    if scheme == "csi":
        socket = probes.argus_socket
        if socket.exists():
            findings.append(Finding("camera", subject, "OK", f"nvargus-daemon listens ({socket})"))
        else:
            detail = f"no {socket}: nvargus-daemon is not running (systemctl status nvargus-daemon)"
            findings.append(Finding("camera", subject, "FAIL", detail))
    return findings


def pipeline_elements(pipeline: str) -> list[str]:
    """Element names of a gst-launch-1.0 pipeline (caps filters and properties left out)."""
    names: list[str] = []
    for part in pipeline.split("!"):
        words = part.split()
        if not words or _CAPS.match(words[0]) or "=" in words[0] or words[0].endswith("."):
            continue
        if words[0] not in names:
            names.append(words[0])
    return names


def _device(subject: str, path: Path) -> Finding:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return Finding("camera", subject, "FAIL", f"no device {path} (camera unplugged?)")
    except OSError as exc:
        return Finding("camera", subject, "FAIL", f"{path}: {exc.strerror}")
    if not stat.S_ISCHR(mode):
        return Finding("camera", subject, "FAIL", f"{path} is not a character device")
    if not os.access(path, os.R_OK | os.W_OK):
        detail = (
            f"{path} is not readable and writable by this user (the service user is in group video)"
        )
        return Finding("camera", subject, "FAIL", detail)
    return Finding("camera", subject, "OK", f"V4L2 device {path}, readable and writable")


def _gst_runner(subject: str, capture: CaptureConfig, probes: Probes) -> Finding:
    from vehicle_agent.capture.opencv import opencv_has_gstreamer  # noqa: PLC0415

    in_cv2 = opencv_has_gstreamer()
    launch = shutil.which(probes.gst_launch)
    backend = capture.gst_backend
    if backend == "opencv" or (backend == "auto" and in_cv2):
        if in_cv2:
            return Finding("camera", subject, "OK", "runs inside OpenCV (cv2 has GStreamer)")
        detail = "gst_backend 'opencv' but this cv2 has no GStreamer (pip's opencv over JetPack's?)"
        return Finding("camera", subject, "FAIL", detail)
    if launch is None:
        detail = f"cv2 has no GStreamer and {probes.gst_launch} is not on PATH (gstreamer1.0-tools)"
        return Finding("camera", subject, "FAIL", detail)
    how = "" if backend == "subprocess" else " (cv2 has no GStreamer)"
    return Finding("camera", subject, "OK", f"runs as a {launch} process{how}")


def _element(subject: str, name: str, probes: Probes) -> Finding:
    inspect = shutil.which(probes.gst_inspect)
    if inspect is None:
        return Finding(
            "camera", subject, "WARN", f"cannot check element {name}: no {probes.gst_inspect}"
        )
    try:
        result = subprocess.run(
            [inspect, "--exists", name], capture_output=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Finding("camera", subject, "WARN", f"cannot check element {name}: {exc}")
    if result.returncode == 0:
        return Finding("camera", subject, "OK", f"GStreamer element {name} is installed")
    hint = " (JetPack's nvidia-l4t-gstreamer)" if name.startswith("nv") else ""
    return Finding("camera", subject, "FAIL", f"no GStreamer element {name}{hint}")


# -- fan --------------------------------------------------------------------------------------


def fan_findings(control: ControlConfig) -> list[Finding]:
    fan = control.fan
    if isinstance(fan, NoFanConfig):
        return [Finding("fan", "none", "WARN", NO_REAL_FAN)]
    if isinstance(fan, SimulatedFanConfig):
        return [Finding("fan", "simulated", "FAIL", SIMULATED_REFUSED)]
    if isinstance(fan, McuFanConfig):
        return [Finding("fan", "mcu", "OK", "driven by the camera module's MCU (see mcu)")]
    if isinstance(fan, SysfsPwmFanConfig):
        return [_sysfs(fan)]
    if isinstance(fan, GpioZeroFanConfig):
        return [_gpiozero(fan)]
    return [Finding("fan", str(fan.driver), "FAIL", "no such fan driver in this build")]  # type: ignore[unreachable]


_UDEV_HINT = "(udev rule 99-vehicle-agent.rules gives group gpio access)"


def _sysfs(fan: SysfsPwmFanConfig) -> Finding:
    from vehicle_agent.control.sysfs_fan import find_chip  # noqa: PLC0415

    chip, channel, where = fan.chip, fan.channel, ""
    if fan.board is not None and fan.pin is not None:
        controller, channel = JETSON_PWM_PINS[fan.board][fan.pin]
        where = f"{fan.board} pin {fan.pin} ({controller}): "
        try:
            chip = find_chip(fan.root, controller)
        except FanError as exc:
            return Finding("fan", "sysfs", "FAIL", where + exc.reason)
    chip_dir = fan.root / f"pwmchip{chip}"
    if not chip_dir.is_dir():
        detail = f"{where}no {chip_dir} (is the pin muxed to PWM with jetson-io?)"
        return Finding("fan", "sysfs", "FAIL", detail)
    try:
        npwm = int((chip_dir / "npwm").read_text().strip())
    except (OSError, ValueError) as exc:
        return Finding("fan", "sysfs", "FAIL", f"{where}{chip_dir / 'npwm'}: {exc}")
    if not 0 <= channel < npwm:
        return Finding(
            "fan", "sysfs", "FAIL", f"{where}{chip_dir} has {npwm} channel(s), not {channel}"
        )
    channel_dir = chip_dir / f"pwm{channel}"
    if channel_dir.is_dir():
        files = [channel_dir / n for n in ("period", "duty_cycle", "enable", "polarity")]
        locked = [p.name for p in files if not os.access(p, os.W_OK)]
        if locked:
            detail = f"{where}{channel_dir}: {', '.join(locked)} not writable {_UDEV_HINT}"
            return Finding("fan", "sysfs", "FAIL", detail)
        return Finding("fan", "sysfs", "OK", f"{where}{channel_dir} exported and writable")
    if not os.access(chip_dir / "export", os.W_OK):
        detail = f"{where}{chip_dir / 'export'} not writable {_UDEV_HINT}"
        return Finding("fan", "sysfs", "FAIL", detail)
    return Finding("fan", "sysfs", "OK", f"{where}{chip_dir} channel {channel} can be exported")


def _gpiozero(fan: GpioZeroFanConfig) -> Finding:
    from vehicle_agent.control import gpio_fan  # noqa: PLC0415

    try:
        gpiozero = gpio_fan._load_gpiozero()
        with warnings.catch_warnings(record=True) as fallbacks:
            warnings.simplefilter("always")  # gpiozero warns per factory it cannot load
            if fan.pin_factory == "default":
                try:
                    factory = gpiozero.Device._default_pin_factory()
                except gpiozero.BadPinFactory as exc:
                    tried = "; ".join(_one_line(w.message) for w in fallbacks)
                    reason = f"{exc} ({tried})" if tried else str(exc)
                    raise FanError("gpiozero", reason) from exc
            else:
                factory = gpio_fan._named_factory(fan.pin_factory)
    except FanError as exc:
        detail = (
            f"{exc.reason}; gpiozero's real pin factories need a Raspberry Pi: on a Jetson use "
            "driver 'sysfs'"
        )
        return Finding("fan", "gpiozero", "FAIL", _one_line(detail))
    name = type(factory).__name__
    factory.close()
    return Finding("fan", "gpiozero", "OK", f"pin factory {name} for pin {fan.pin}")


# -- MCU --------------------------------------------------------------------------------------


def mcu_findings(control: ControlConfig, probes: Probes) -> list[Finding]:
    """The port, then (with `probes.query_mcu`) the module's answer, on a loop of its own."""
    mcu = control.mcu
    if mcu is None:
        detail = "no [control.mcu]: no cooler and no module temperatures (thermal control off)"
        return [Finding("mcu", "link", "WARN", detail)]
    port = Path(mcu.port)
    if not port.exists():
        detail = f"no {port} (module unplugged, or not the udev name?)"
        return [Finding("mcu", mcu.port, "FAIL", detail)]
    if not os.access(port, os.R_OK | os.W_OK):
        detail = f"{port} is not readable and writable by this user (the service user is in group dialout)"
        return [Finding("mcu", mcu.port, "FAIL", detail)]
    findings = [Finding("mcu", mcu.port, "OK", "port exists, readable and writable")]
    if probes.query_mcu:
        findings += compat.run(_ask_mcu(control, probes))
    return findings


async def _ask_mcu(control: ControlConfig, probes: Probes) -> list[Finding]:
    mcu = control.mcu
    assert mcu is not None  # noqa: S101 - checked by the caller
    findings: list[Finding] = []
    try:
        async with open_bridge(mcu) as bridge:
            identity = await bridge.wait_ready(probes.mcu_timeout_s)
            telemetry = await bridge.get_telemetry()
    except McuError as exc:
        detail = f"no answer within {probes.mcu_timeout_s:g} s: {_one_line(exc)}"
        findings.append(Finding("mcu", mcu.port, "FAIL", detail))
        return findings

    def celsius(value: float | None) -> str:
        return "no reading" if value is None else f"{value:.1f} °C"

    faults = [flag.name or "?" for flag in type(telemetry.faults) if flag in telemetry.faults]
    detail = (
        f"firmware {identity.firmware_version} (protocol {identity.protocol}, serial "
        f"{identity.serial_number}): sensor {celsius(telemetry.sensor_c)}, hot side "
        f"{celsius(telemetry.hot_side_c)}, fan {telemetry.fan_duty:.2f} at {telemetry.fan_rpm} "
        f"rpm, faults {', '.join(faults) or 'none'}"
    )
    findings.append(Finding("mcu", mcu.port, "WARN" if faults else "OK", detail))
    if abs(identity.fan_safe_duty - control.safe_duty) > 1e-6:
        detail = (
            f"the firmware's fan_safe_duty is {identity.fan_safe_duty:g} but [control] "
            f"safe_duty is {control.safe_duty:g}: set them equal"
        )
        findings.append(Finding("mcu", mcu.port, "WARN", detail))
    return findings
