"""`vehicle-agent` command line: run the daemon, replay on the bench, enhance offline, check config."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from vehicle_agent import __version__, compat
from vehicle_agent.config import Config, ConfigError, load_config
from vehicle_agent.enhance import EnhancerError
from vehicle_agent.enhance.base import backend_types
from vehicle_agent.logs import configure_logging

logger = logging.getLogger("vehicle_agent")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

DEFAULT_CONFIG = Path("/etc/vehicle-agent/vehicle-agent.toml")
"""The config `run`, `safe-state`, `check-config` and `doctor` read when none is named (the
unit's)."""


class CliError(Exception):
    """A failure reported as one line on stderr with a non-zero exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        self.code = code
        super().__init__(message)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose epilog may be computed when help is shown (installed models)."""

    def __init__(self, *args: Any, epilog_from: Callable[[], str] | None = None, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._epilog_from = epilog_from

    def format_help(self) -> str:
        if self._epilog_from is not None:
            self.epilog = self._epilog_from()
        return super().format_help()


def _global_options(parser: argparse.ArgumentParser, *, after_command: bool) -> None:
    """The options every command takes, before or after its name (`vehicle-agent --log-level
    DEBUG run` and `vehicle-agent run --log-level DEBUG`). After the name they default to
    SUPPRESS, so one given before the name is not overwritten by the command's default."""
    default = argparse.SUPPRESS if after_command else None
    parser.add_argument(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        type=str.upper,
        default=default,
        help="lowest level logged (default: the config's, else INFO)",
    )
    parser.add_argument(
        "--log-format",
        choices=["auto", "human", "json", "journald"],
        default=default,
        help="log line format (default: the config's, else auto: journald under systemd, "
        "human on a terminal, JSON otherwise)",
    )


def _config_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    # SUPPRESS: `vehicle-agent --config FILE COMMAND` is not undone by the command's default.
    parser.add_argument("--config", type=Path, default=argparse.SUPPRESS, help=help_text)


def _installed_models() -> str:
    """`enhance --help`'s epilog: the models in the default folders, read when help is shown."""
    from vehicle_agent.enhance.manifest import ManifestError  # noqa: PLC0415
    from vehicle_agent.enhance.store import ModelStore, default_dirs  # noqa: PLC0415

    dirs = default_dirs(Config().agent.state_dir)
    store = ModelStore(dirs)
    rows = []
    for name in store.names():
        try:
            directory, manifest = store.find(name)
        except ManifestError as exc:
            rows.append(f"  {name:16s} (unreadable: {exc.reason})")
            continue
        rows.append(f"  {name:16s} {manifest.version:8s} {manifest.task:10s} {directory.parent}")
    return "\n".join(
        [
            "installed models (--model NAME):",
            *(rows or ["  none"]),
            "searched in: " + ", ".join(map(str, dirs)),
            "(the config's [enhance] model_dirs and --model-dir add folders)",
        ]
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="vehicle-agent",
        description="Camera controller daemon: capture, enhance, analyze, act, uplink. "
        "--config, --log-level and --log-format may come before or after the command.",
    )
    parser.add_argument("--version", action="version", version=f"vehicle-agent {__version__}")
    _global_options(parser, after_command=False)
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help=f"TOML config file, for the commands that take one (run, safe-state and "
        f"check-config default to {DEFAULT_CONFIG}; the others to built-in defaults)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, **kw: Any) -> argparse.ArgumentParser:
        sub_parser = sub.add_parser(name, **kw)
        _global_options(sub_parser, after_command=True)
        return sub_parser

    run = command("run", help="run the daemon on the vehicle (until SIGTERM/SIGINT)")
    _config_option(run, f"TOML config file (default: {DEFAULT_CONFIG})")

    sim = command("simulate", help="replay a recording with simulated hardware (bench)")
    _config_option(sim, "TOML config file (default: built-in defaults)")
    sim.add_argument("--video", type=Path, help="recording to replay (default: bundled sample)")
    sim.add_argument(
        "--report",
        type=Path,
        default=Path("simulate-report"),
        help="directory for summary.json, events.jsonl, frames.csv, output.mp4, "
        "side_by_side.mp4, the plots and report.html (default: ./simulate-report)",
    )
    sim.add_argument(
        "--speed",
        choices=["realtime", "max"],
        default="max",
        help="'realtime' paces frames like the camera did; 'max' as fast as possible (default)",
    )
    sim.add_argument(
        "--broker",
        metavar="URL",
        help="publish telemetry, events and frames to this MQTT broker (mqtt://HOST:PORT or "
        "mqtts://HOST:PORT; CA, username and password_credential from the config's [uplink]); "
        "default: no fleet link",
    )
    sim.add_argument(
        "--ambient",
        type=float,
        default=25.0,
        metavar="C",
        help="air temperature around the simulated camera module, °C (default 25; try 58 for "
        "a hot day that trips the thermal warning)",
    )
    sim.add_argument(
        "--thermal-speed",
        type=float,
        default=20.0,
        metavar="X",
        help="the thermal model runs X times faster than real time (default 20)",
    )
    sim.add_argument(
        "--mcu-fault",
        action="append",
        default=[],
        metavar="NAME[@Ts]",
        help="inject a microcontroller fault from video time T (repeatable): silence, "
        "stuck-sensor, overtemp, sensor-open, fan-stall, garbage, corrupt, drop",
    )
    sim.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="KIND@START[-END]",
        help="inject a fault at video time START, seconds (repeatable): camera-stall (no frames "
        "for END-START wall seconds, default 6), camera-eos (the recording ends), enhance-fail "
        "(the first enhancement backend raises until END, default the end), broker-loss (the "
        "broker is unreachable until END, default START+10; needs --broker)",
    )
    sim.add_argument(
        "--inject",
        metavar="SPEC",
        help="put soiling on the simulated lens: KIND@START[-END][:COVER%%] items, comma "
        "separated, KIND one of drops, mist, dust, mud (e.g. 'drops@20s-35s,mud@45s:10%%'); "
        "without END it stays until the fan has blown it off",
    )
    sim.add_argument(
        "--seed",
        type=int,
        metavar="N",
        help="repeatable run: seeds the soiling and the module's noise and writes host timings "
        "in events as null; with --speed max and no "
        "--broker, two runs give the same events.jsonl (thermal events may still move)",
    )

    enh = command(
        "enhance",
        help="enhance an image, a folder of images or a video offline",
        description=textwrap.fill(
            "Enhance an image, a folder of images or a video with the daemon's enhance "
            "chain. Pictures above 8192 px on a side or 50 megapixels are refused; the output "
            "never replaces the input and its folder must exist. On a terminal a video shows a "
            "progress bar."
        ),
        epilog_from=_installed_models,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    enh.add_argument("input", type=Path, metavar="IN", help="image, folder of images, or video")
    enh.add_argument("--out", type=Path, required=True, help="output file or folder")
    _config_option(enh, "TOML config whose [enhance] section is used")
    enh.add_argument(
        "--backend",
        choices=backend_types(),
        help="run only this backend instead of the config's chain; it is an error (exit 2) "
        "when it cannot run here",
    )
    enh.add_argument(
        "--model",
        metavar="NAME",
        help="model to run, whatever the config's gating says (default: the config's model); "
        "it is an error (exit 2) when it is not installed or no model backend can run it",
    )
    enh.add_argument(
        "--model-dir",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="also look for models in DIR (repeatable); searched with the config's folders",
    )
    enh.add_argument(
        "--no-guard",
        action="store_true",
        help="write the backend's output as it is: skip the harm guard, which keeps an output "
        "only where it is likely to help",
    )

    status = command("status", help="summary of the daemon running on this machine")
    _config_option(status, "the daemon's config (for its metrics port)")
    status.add_argument("--url", help="metrics URL (default: from the config, else port 9108)")
    status.add_argument(
        "--interval",
        type=float,
        default=1.0,
        metavar="S",
        help="seconds between the two scrapes the frame rate is measured over (default 1; "
        "0: one scrape, no frame rate)",
    )
    status.add_argument("--json", action="store_true", help="print one JSON object")

    safe = command(
        "safe-state",
        help="put the configured fan and cooler in their safe state and exit (the unit's "
        "ExecStopPost=)",
    )
    _config_option(safe, f"TOML config file (default: {DEFAULT_CONFIG})")

    check = command("check-config", help="validate a config file and exit")
    _config_option(check, "the config, when FILE is not given")
    check.add_argument(
        "file",
        type=Path,
        nargs="?",
        metavar="FILE",
        help=f"the config (default: --config, else {DEFAULT_CONFIG})",
    )
    check.add_argument(
        "--json",
        action="store_true",
        help='print one JSON object: {"file", "ok", "digest"} or {"file", "ok": false, "error"}',
    )

    doctor = command(
        "doctor",
        help="report what this machine can do of what the config needs, and why not",
        description="One line per check (OK, WARN, FAIL): enhancement backends (onnxruntime "
        "providers, TensorRT and pycuda/CUDA, engines, models), the camera source, the fan "
        "driver and the MCU link. Exits 1 when something the config needs is missing. Asking "
        "the MCU opens its port: stop the service first, or pass --no-mcu.",
    )
    _config_option(doctor, f"TOML config file (default: {DEFAULT_CONFIG})")
    doctor.add_argument("--json", action="store_true", help="print the report as JSON")
    engine = command(
        "build-engine",
        help="build the TensorRT engines the daemon will load, before it starts (on the vehicle)",
        description="For each model the config's gating may run (or each --model), build the "
        "TensorRT engine into the cache the daemon reads; a current one is left alone unless "
        "--force. Exits 1 when a build failed, 2 without TensorRT or on a usage error.",
    )
    _config_option(engine, f"TOML config file (default: {DEFAULT_CONFIG})")
    engine.add_argument("--model", action="append", default=[], help="model name (repeatable)")
    engine.add_argument("--precision", choices=["fp32", "fp16", "int8"])
    engine.add_argument("--calibration-dir", type=Path, help="frames for INT8 calibration")
    engine.add_argument("--force", action="store_true", help="rebuild even when current")
    doctor.add_argument(
        "--no-mcu",
        action="store_true",
        help="do not open the MCU's port to ask for its status (only check that it exists)",
    )
    doctor.add_argument(
        "--mcu-timeout",
        type=float,
        default=2.0,
        metavar="S",
        help="wait this long for the MCU to answer, seconds (default 2)",
    )
    return parser


def _config(path: Path | None) -> Config:
    return Config() if path is None else load_config(path)


def _setup_logging(args: argparse.Namespace, config: Config | None) -> None:
    level = args.log_level or (config.logging.level if config else "INFO")
    fmt = args.log_format or (config.logging.format if config else "auto")
    configure_logging(level, fmt)


def _unit_config(args: argparse.Namespace) -> Path:
    """The config of `run`, `safe-state` and `doctor`: --config, else the unit's file."""
    return args.config if args.config is not None else DEFAULT_CONFIG


def cmd_check_config(args: argparse.Namespace) -> int:
    path: Path = args.file or _unit_config(args)
    try:
        config = load_config(path)
    except ConfigError as exc:
        if args.json:
            print(json.dumps({"file": str(path), "ok": False, "error": str(exc)}))
        raise
    if args.json:
        print(json.dumps({"file": str(path), "ok": True, "digest": config.digest()}))
    else:
        print(f"{path}: OK (config digest {config.digest()})")
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> int:
    from vehicle_agent.service.doctor import (  # noqa: PLC0415 - keeps `--help` fast
        Probes,
        diagnose,
        failed,
        report_dict,
        summary_line,
    )

    if not 0.1 <= args.mcu_timeout <= 30.0:
        raise CliError(f"--mcu-timeout {args.mcu_timeout:g}: expected 0.1 to 30 s", EXIT_USAGE)
    config = load_config(_unit_config(args))
    findings = diagnose(config, Probes(query_mcu=not args.no_mcu, mcu_timeout_s=args.mcu_timeout))
    if args.json:
        print(json.dumps(report_dict(findings, _unit_config(args)), indent=2, ensure_ascii=False))
    else:
        for finding in findings:
            print(finding.line())
        print(summary_line(findings))
    return EXIT_FAILURE if failed(findings) else EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from vehicle_agent.control.build import SIMULATED_REFUSED, fan_problem  # noqa: PLC0415
    from vehicle_agent.service.daemon import run_daemon  # noqa: PLC0415 - keeps `--help` fast

    config_path = _unit_config(args)
    config = load_config(config_path)
    problem = fan_problem(config.control)
    if problem == SIMULATED_REFUSED:
        raise CliError(f"[control.fan] driver 'simulated': {problem}", EXIT_USAGE)
    _setup_logging(args, config)
    if problem is not None:
        logger.warning("%s", problem)
    logger.info(
        "vehicle-agent %s: vehicle %s, camera %s",
        __version__,
        config.agent.vehicle_id,
        config.agent.camera_id,
    )
    result = compat.run(
        run_daemon(config, config_path, log_override=(args.log_level, args.log_format))
    )
    logger.info(
        "stopped (%s): %d frames in, %d out, %d dropped, %.1f fps",
        result.stop_reason,
        result.frames_in,
        result.frames_out,
        result.frames_dropped,
        result.fps,
    )
    return EXIT_FAILURE if result.stop_reason == "source_gave_up" else EXIT_OK


def cmd_safe_state(args: argparse.Namespace) -> int:
    from vehicle_agent.service.safe_state import make_safe  # noqa: PLC0415

    config = load_config(_unit_config(args))
    failed = compat.run(make_safe(config.control))
    for reason in failed:
        print(f"vehicle-agent: safe-state: {reason}", file=sys.stderr)
    return EXIT_FAILURE if failed else EXIT_OK


def _check_recording(video: Path) -> None:
    """Refuse, before anything starts, a `--video` that is missing or a still image (a file
    that does not decode is replayed: the report says how the source gave up)."""
    from vehicle_agent.enhance.offline import IMAGE_SUFFIXES  # noqa: PLC0415

    if not video.is_file():
        raise CliError(f"{video}: no such video file", EXIT_USAGE)
    if video.suffix.lower() in IMAGE_SUFFIXES:
        raise CliError(
            f"--video {video}: a still image, not a video: simulate replays a recording "
            "(.mp4, .avi, .mkv, …); `vehicle-agent enhance` takes images",
            EXIT_USAGE,
        )


def cmd_simulate(args: argparse.Namespace) -> int:
    from vehicle_agent.sim.simulate import (  # noqa: PLC0415
        BenchHardware,
        bench_uplink_config,
        parse_mcu_fault,
        sample_video,
        simulate,
    )

    config = _config(args.config)
    _setup_logging(args, config)
    video: Path = args.video or sample_video()
    _check_recording(video)
    if args.broker is not None:
        bench_uplink_config(config, args.broker)
    if not -40.0 <= args.ambient <= 85.0:
        raise CliError(f"--ambient {args.ambient:g}: expected -40 to 85 °C", EXIT_USAGE)
    if not 0.1 <= args.thermal_speed <= 1000.0:
        raise CliError(f"--thermal-speed {args.thermal_speed:g}: expected 0.1 to 1000", EXIT_USAGE)
    if args.seed is not None and not 0 <= args.seed < 2**31:
        raise CliError(f"--seed {args.seed}: expected 0 to 2147483647", EXIT_USAGE)
    try:
        faults = tuple(parse_mcu_fault(spec) for spec in args.mcu_fault)
    except ValueError as exc:
        raise CliError(f"--mcu-fault: {exc}", EXIT_USAGE) from exc
    from vehicle_agent.sim.lens import Injection, InjectSpecError, parse_inject  # noqa: PLC0415

    lens: tuple[Injection, ...] = ()
    if args.inject is not None:
        try:
            lens = parse_inject(args.inject, seed=args.seed or 0)
        except InjectSpecError as exc:
            raise CliError(f"--inject: {exc}", EXIT_USAGE) from exc
    from vehicle_agent.sim.faults import FaultSpecError, parse_fault  # noqa: PLC0415

    try:
        injected = tuple(parse_fault(spec) for spec in args.fault)
    except FaultSpecError as exc:
        raise CliError(f"--fault: {exc}", EXIT_USAGE) from exc
    if args.broker is None and any(f.kind == "broker-loss" for f in injected):
        raise CliError("--fault broker-loss needs --broker URL", EXIT_USAGE)
    hardware = BenchHardware(args.ambient, args.thermal_speed, faults, lens, injected)
    summary = compat.run(
        simulate(
            config,
            video,
            args.report,
            args.speed,
            broker=args.broker,
            hardware=hardware,
            progress=sys.stderr.isatty(),
            seed=args.seed,
        )
    )
    if summary["frames_in"] == 0:
        raise CliError(f"--video {video}: no frame was read; see {args.report}")
    link = summary.get("uplink")
    if isinstance(link, dict) and not link["connected"]:
        raise CliError(
            f"--broker {link['broker']}: never connected ({link['last_error'] or 'no reason'}); "
            f"{link['left_in_outbox']} messages left undelivered in {link['outbox']}"
        )
    outputs = summary["outputs"]
    assert isinstance(outputs, dict)  # noqa: S101 - built by summary_dict
    print(
        f"simulated {video.name} at {args.speed} speed: {summary['frames_in']} frames in, "
        f"{summary['frames_out']} out, {summary['frames_dropped']} dropped, "
        f"{summary['fps']} fps ({summary['stop_reason']})"
    )
    for name, path in outputs.items():
        print(f"  {name:12s} {path}")
    if isinstance(link, dict) and link["left_in_outbox"]:
        print(
            f"  fleet link: {link['left_in_outbox']} messages not delivered by the end, kept in "
            f"{link['outbox']}"
        )
    return EXIT_FAILURE if summary["stop_reason"] == "source_gave_up" else EXIT_OK


def cmd_enhance(args: argparse.Namespace) -> int:
    from vehicle_agent.enhance.chain import DEFAULT_GUARD, build_enhancer  # noqa: PLC0415
    from vehicle_agent.enhance.offline import (  # noqa: PLC0415
        EnhancerLoadError,
        LazyEnhancer,
        OfflineError,
        SceneGate,
        enhance_path,
        named_chain,
    )

    config = _config(args.config)
    _setup_logging(args, config)
    try:
        enhance, chain = named_chain(
            config.enhance, config.agent.state_dir, args.backend, args.model, args.model_dir
        )
    except OfflineError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    named = [f"--{k} {v}" for k, v in (("backend", args.backend), ("model", args.model)) if v]
    guard = None if args.no_guard else DEFAULT_GUARD
    # Offline there is no frame rate to keep: loads and health checks run inline. What the user
    # named runs or fails (floor=False): an unchanged copy is not an enhancement.
    enhancer = LazyEnhancer(
        lambda: build_enhancer(
            enhance,
            config.agent.state_dir,
            chain=chain,
            background=False,
            guard=guard,
            floor=not named,
        )
    )
    # `--model` forces one model whatever the scene; otherwise the daemon's gating decides.
    gate = None if args.model is not None else SceneGate(config)
    progress = _VideoProgress(args.input) if sys.stderr.isatty() else None
    try:
        result = enhance_path(enhancer, args.input, args.out, gate, progress=progress)
    except EnhancerLoadError as exc:
        raise CliError(f"{' '.join(named) or 'enhance'}: {exc}", EXIT_USAGE) from exc
    except OfflineError as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc
    finally:
        if progress is not None:
            progress.close()
        enhancer.close()
    print(
        f"enhanced {result.frames} frame(s) with {enhancer.name} into {args.out}"
        + (f"; {len(result.failed)} file(s) failed" if result.failed else "")
    )
    for _, reason in result.failed:
        print(f"vehicle-agent: failed: {reason}", file=sys.stderr)
    return EXIT_FAILURE if result.failed else EXIT_OK


class _VideoProgress:
    """`enhance` on a video, on a terminal: the simulator's progress bar, from the first frame."""

    def __init__(self, video: Path) -> None:
        self.video = video
        self._bar: Any = None

    def __call__(self, done: int, total: int | None) -> None:
        if self._bar is None:
            from vehicle_agent.sim.progress import ProgressSink  # noqa: PLC0415

            self._bar = ProgressSink(total, f"enhancing {self.video.name}")
        del done
        self._bar.advance()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def cmd_status(args: argparse.Namespace) -> int:
    from vehicle_agent.service.status import (  # noqa: PLC0415
        StatusError,
        fetch_status,
        format_status,
        status_json,
    )

    config = _config(args.config)
    service = config.service
    host = f"[{service.metrics_host}]" if ":" in service.metrics_host else service.metrics_host
    url = args.url or f"http://{host}:{service.metrics_port}/metrics"
    if not 0.0 <= args.interval <= 60.0:
        raise CliError(f"--interval {args.interval:g}: expected 0 to 60 seconds", EXIT_USAGE)
    try:
        status = fetch_status(url, interval_s=args.interval)
    except StatusError as exc:
        if args.json:
            print(json.dumps({"url": url, "ok": False, "error": str(exc)}))
        raise CliError(str(exc)) from exc
    if args.json:
        print(json.dumps({"url": url, "ok": True, **status_json(status)}, indent=2))
    else:
        print(format_status(status))
    return EXIT_OK


def cmd_build_engine(args: argparse.Namespace) -> int:
    from pydantic import ValidationError  # noqa: PLC0415

    from vehicle_agent.enhance.build_engines import (  # noqa: PLC0415 - keeps `--help` fast
        TensorRtMissingError,
        build_engines,
        tensorrt_config,
    )
    from vehicle_agent.validation import describe_validation  # noqa: PLC0415

    config = load_config(_unit_config(args))
    try:
        trt = tensorrt_config(
            config, precision=args.precision, calibration_dir=args.calibration_dir
        )
    except ValidationError as exc:
        raise CliError(f"tensorrt settings: {describe_validation(exc)}", EXIT_USAGE) from None

    def complain(text: str) -> None:
        print(f"vehicle-agent: build-engine: {text}", file=sys.stderr)

    try:
        failed = build_engines(config, trt, args.model, force=args.force, complain=complain)
    except TensorRtMissingError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    return EXIT_FAILURE if failed else EXIT_OK


COMMANDS = {
    "run": cmd_run,
    "simulate": cmd_simulate,
    "enhance": cmd_enhance,
    "check-config": cmd_check_config,
    "status": cmd_status,
    "safe-state": cmd_safe_state,
    "doctor": cmd_doctor,
    "build-engine": cmd_build_engine,
}


def main(argv: Sequence[str] | None = None) -> int:
    # OpenCV and FFmpeg print decoder chatter on stderr; our own errors say what failed.
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    args = build_parser().parse_args(argv)
    if args.command in ("check-config", "status"):
        configure_logging(args.log_level or "WARNING", args.log_format or "auto")
    else:
        configure_logging(args.log_level or "INFO", args.log_format or "auto")
    try:
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"vehicle-agent: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (CliError, EnhancerError) as exc:
        print(f"vehicle-agent: error: {exc}", file=sys.stderr)
        return exc.code if isinstance(exc, CliError) else EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
