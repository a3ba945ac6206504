"""Simulator's last step: plots and one offline `report.html` from the bench report's files.

It reads only what the run wrote (`summary.json`, `events.jsonl`, `frames.csv`, the videos), so
it can be run again on an old report directory. Plots use matplotlib's Agg canvas directly (no
pyplot, no display); the HTML embeds them as data URIs and needs nothing from the network.
"""

from __future__ import annotations

import base64
import csv
import json
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import jinja2
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

PLOTS = ("quality", "adhesion", "thermal", "latency", "timeline")
"""The PNG files written, `<name>.png`, in the order the report shows them."""

HTML_NAME = "report.html"
SIDE_BY_SIDE = "side_by_side.mp4"
"""H.264 (`output.sinks.VideoWriter`): the page plays it full size."""
LEGACY_PREVIEW = "side_by_side.webm"
"""The VP8 copy older versions wrote beside it (removed when the report is written again)."""
STRIP = "side_by_side_strip.png"
STILL_WIDTH = 640
"""Pixels across each still of the strip."""
STRIP_FRAMES = 6

QUALITY_COLUMNS = ("brightness", "contrast", "sharpness", "noise")
TEMPERATURE_COLUMNS = ("sensor_c", "cold_side_c", "hot_side_c")
CONDITION_COLORS = {
    "normal": "#ffffff",
    "low_light": "#c6d4f0",
    "fog": "#d9d9d9",
    "blur": "#f5deb3",
    "rain": "#c9ecd4",
}
CLEANING_MARKS = {
    "cleaning_started": ("tab:blue", "-"),
    "cleaning_finished": ("tab:green", "--"),
    "cleaning_failed": ("tab:red", "-"),
    "cleaning_retry": ("tab:orange", ":"),
}
SOILING_COLORS = {"drops": "tab:cyan", "mist": "tab:gray", "dust": "tab:olive", "mud": "tab:brown"}
THERMAL_PREFIXES = ("thermal_", "sensor_", "mcu_", "actuator_")
EVENT_STYLES = (
    ("tab:purple", "--"),
    ("tab:green", "-."),
    ("tab:brown", ":"),
    ("tab:pink", "--"),
    ("tab:olive", "-."),
    ("tab:cyan", ":"),
)
"""(colour, line style) for event types without their own, handed out in order of name."""
LIMIT_STYLES = {
    "sensor_warning": ("tab:orange", "--"),
    "sensor_critical": ("tab:red", "--"),
    "hot_warning": ("tab:orange", ":"),
    "hot_critical": ("tab:red", ":"),
}
FAULT_COLORS = ("tab:red", "tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive")


class ReportError(Exception):
    """The report directory lacks a file the report needs; `path` names it."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


@dataclass
class BenchRun:
    """What one simulator run wrote, read back."""

    directory: Path
    summary: dict[str, object]
    events: list[dict[str, object]]
    columns: dict[str, list[str]] = field(default_factory=dict)

    def series(self, name: str) -> np.ndarray:
        """A numeric column of `frames.csv`; NaN where empty or absent."""
        values = self.columns.get(name)
        if values is None:
            return np.full(len(self.t), np.nan)
        return np.array([_number(v) for v in values], dtype=np.float64)

    @property
    def t(self) -> np.ndarray:
        return np.array([_number(v) for v in self.columns.get("t", [])], dtype=np.float64)

    @property
    def end_s(self) -> float:
        t = self.t
        return float(np.nanmax(t)) if t.size else 0.0

    def events_of(self, types: Iterable[str]) -> list[dict[str, object]]:
        wanted = set(types)
        return [e for e in self.events if e.get("type") in wanted]


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def load_run(directory: Path) -> BenchRun:
    """Read `summary.json`, `events.jsonl` and `frames.csv` from `directory`."""
    paths = {name: directory / name for name in ("summary.json", "events.jsonl", "frames.csv")}
    for path in paths.values():
        if not path.is_file():
            raise ReportError(path, "missing: the simulator run did not write it")
    summary = json.loads(paths["summary.json"].read_text(encoding="utf-8"))
    events = [
        json.loads(line)
        for line in paths["events.jsonl"].read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    columns: dict[str, list[str]] = {}
    with paths["frames.csv"].open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                columns.setdefault(key, []).append(value or "")
    return BenchRun(directory, summary, events, columns)


# -- plots ---------------------------------------------------------------------------------


def _figure(rows: int, height: float = 2.0) -> tuple[Figure, list[Axes]]:
    figure = Figure(figsize=(10, 0.8 + height * rows), layout="constrained")
    FigureCanvasAgg(figure)
    axes = [figure.add_subplot(rows, 1, i + 1) for i in range(rows)]
    for ax in axes[1:]:
        ax.sharex(axes[0])
    axes[-1].set_xlabel("video time (s)")
    return figure, axes


def _save(figure: Figure, path: Path) -> Path:
    figure.savefig(path, dpi=90)
    return path


def _legend(ax: Axes) -> None:
    """A legend beside the plot (never over the curves), when anything was drawn with a
    label (an empty run draws nothing)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize="small")


def _event_lines(ax: Axes, run: BenchRun, marks: Mapping[str, tuple[str, str]]) -> None:
    seen: set[str] = set()
    for event in run.events_of(marks):
        kind = str(event["type"])
        color, style = marks[kind]
        t = event.get("t")
        if isinstance(t, int | float):
            name = kind if kind not in seen else None
            ax.axvline(float(t), color=color, linestyle=style, linewidth=1.2, label=name)
            seen.add(kind)


def _condition_spans(ax: Axes, t: np.ndarray, conditions: Sequence[str]) -> None:
    start = 0
    for i in range(1, len(conditions) + 1):
        if i == len(conditions) or conditions[i] != conditions[start]:
            color = CONDITION_COLORS.get(conditions[start], "#eeeeee")
            if conditions[start] not in {"normal", ""}:
                end = t[i] if i < len(t) else t[-1]
                ax.axvspan(float(t[start]), float(end), color=color, alpha=0.7, linewidth=0)
            start = i


def plot_quality(run: BenchRun, path: Path) -> Path:
    """Quality metrics over time, with the scene condition as coloured bands and a step line."""
    figure, axes = _figure(len(QUALITY_COLUMNS) + 1, 1.6)
    t = run.t
    conditions = run.columns.get("condition", [])
    for ax, name in zip(axes, QUALITY_COLUMNS, strict=False):
        _condition_spans(ax, t, conditions)
        ax.plot(t, run.series(name), linewidth=1.0)
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    names = list(CONDITION_COLORS)
    names += sorted({c for c in conditions if c and c not in CONDITION_COLORS})
    levels = [names.index(c) if c in names else math.nan for c in conditions]
    ax = axes[-1]
    ax.step(t, levels, where="post", color="tab:purple")
    ax.set_yticks(range(len(names)), names)
    ax.set_ylabel("condition")
    ax.grid(alpha=0.3)
    axes[0].set_title("Image quality and scene condition (bands: condition other than normal)")
    return _save(figure, path)


def plot_adhesion(run: BenchRun, path: Path) -> Path:
    """Adhesion score and covered fraction, the injected soiling shaded, cleanings marked."""
    figure, (ax, cov) = _figure(2, 2.4)
    t = run.t
    injected = run.summary.get("injected")
    for item in injected if isinstance(injected, list) else []:
        if not isinstance(item, dict):
            continue
        start = item.get("start_s")
        appeared = item.get("appeared_s")
        gone = item.get("gone_s")
        end = float(gone) if isinstance(gone, int | float) else run.end_s
        kind = str(item.get("kind", "?"))
        color = SOILING_COLORS.get(kind, "tab:red")
        text = f"injected {kind}"
        if isinstance(appeared, int | float):
            for a in (ax, cov):
                a.axvspan(
                    float(appeared), end, color=color, alpha=0.2, label=text if a is ax else None
                )
        elif isinstance(start, int | float):
            ax.axvline(float(start), color=color, linestyle=":", label=f"{text} (never shown)")
    ax.plot(t, run.series("adhesion_score"), color="black", linewidth=1.0, label="score")
    ax.plot(t, run.series("adhesion_detected"), color="tab:purple", linewidth=0.8, label="detected")
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=0.8, label="alarm threshold")
    _event_lines(ax, run, CLEANING_MARKS)
    ax.set_ylim(-0.05, 1.05)
    ax.set_ylabel("adhesion score")
    _legend(ax)
    ax.grid(alpha=0.3)
    ax.set_title("Lens adhesion: score vs injected ground truth (shaded), cleanings (lines)")
    cov.plot(t, run.series("adhesion_covered") * 100.0, color="tab:brown", label="covered")
    cov.set_ylabel("covered (% of frame)")
    cov.grid(alpha=0.3)
    fan = cov.twinx()
    fan.plot(t, run.series("fan_duty") * 100.0, color="tab:blue", alpha=0.6, label="fan duty")
    fan.set_ylabel("fan duty (%)")
    fan.set_ylim(-5, 105)
    # The fan's axis is on the right, so this legend goes below the plot.
    handles = [*cov.get_legend_handles_labels()[0], *fan.get_legend_handles_labels()[0]]
    cov.legend(
        handles=handles, loc="upper left", bbox_to_anchor=(0.0, -0.28), ncols=2, fontsize="small"
    )
    return _save(figure, path)


def plot_thermal(run: BenchRun, path: Path) -> Path:
    """Fan duty and readback; module temperatures per frame; thermal and fault events."""
    figure, (fan, temp) = _figure(2, 2.4)
    t = run.t
    fan.plot(t, run.series("fan_duty") * 100.0, label="duty commanded", linewidth=1.0)
    readback = run.series("fan_readback")
    if not np.all(np.isnan(readback)):
        fan.plot(t, readback * 100.0, label="duty read back", linewidth=0.8, linestyle="--")
    fan.set_ylabel("fan duty (%)")
    fan.set_ylim(-5, 105)
    _legend(fan)
    fan.grid(alpha=0.3)
    fan.set_title("Fan and module temperatures (vertical lines: thermal and fault events)")
    plotted = False
    for name in TEMPERATURE_COLUMNS:
        values = run.series(name)
        if not np.all(np.isnan(values)):
            temp.plot(t, values, label=name.removesuffix("_c").replace("_", " "), linewidth=1.0)
            plotted = True
    if not plotted:
        # An older report without temperature columns: the readings its events carry.
        points = [
            (float(e["t"]), float(e["temperature_c"]))  # type: ignore[arg-type]
            for e in run.events
            if isinstance(e.get("temperature_c"), int | float)
        ]
        if points:
            temp.plot(*zip(*points, strict=True), "o", label="temperature in events")
    kinds = sorted(
        {str(e["type"]) for e in run.events if str(e.get("type", "")).startswith(THERMAL_PREFIXES)}
    )
    others = iter(EVENT_STYLES * (1 + len(kinds) // len(EVENT_STYLES)))
    marks = {kind: ("tab:red", "-") if "critical" in kind else next(others) for kind in kinds}
    _event_lines(temp, run, marks)
    limits = run.summary.get("thermal_limits_c")
    for name, value in limits.items() if isinstance(limits, dict) else []:
        if isinstance(value, int | float) and name in LIMIT_STYLES:
            color, style = LIMIT_STYLES[name]
            temp.axhline(
                float(value), color=color, linestyle=style, linewidth=0.9,
                label=f"{label(name).lower()} {value:g} °C",
            )  # fmt: skip
    temp.set_ylabel("°C")
    _legend(temp)
    temp.grid(alpha=0.3)
    return _save(figure, path)


def plot_latency(run: BenchRun, path: Path) -> Path:
    """Latency of each stage per frame (ms)."""
    figure, (ax,) = _figure(1, 3.0)
    t = run.t
    for name in run.columns:
        if name.endswith("_ms"):
            ax.plot(t, run.series(name), label=name.removesuffix("_ms"), linewidth=0.9)
    # frames.csv is written by the output stage itself, so its own time per frame is not in
    # it: the run's median and 95th percentile stand for it.
    latency = run.summary.get("latency_ms")
    output = latency.get("output") if isinstance(latency, dict) else None
    if isinstance(output, dict):
        for key, style in (("median", "-"), ("p95", "--")):
            value = output.get(key)
            if isinstance(value, int | float):
                ax.axhline(
                    float(value), color="black", linestyle=style, linewidth=0.9,
                    label=f"output, {'median' if key == 'median' else '95th pct'} of the run",
                )  # fmt: skip
    ax.set_ylabel("ms")
    ax.set_yscale("symlog", linthresh=1.0)
    _legend(ax)
    ax.grid(alpha=0.3)
    ax.set_title("Latency per stage and frame (log scale above 1 ms)")
    return _save(figure, path)


def plot_timeline(run: BenchRun, path: Path) -> Path:
    """Every event on one chart: type against video time."""
    types = list(dict.fromkeys(str(e.get("type")) for e in run.events))
    figure, (ax,) = _figure(1, max(1.5, 0.28 * len(types)))
    for row, kind in enumerate(types):
        times = [
            float(e["t"])  # type: ignore[arg-type]
            for e in run.events
            if e.get("type") == kind and isinstance(e.get("t"), int | float)
        ]
        ax.plot(times, [row] * len(times), "|", markersize=12, markeredgewidth=2)
    ax.set_yticks(range(len(types)), types)
    ax.set_ylim(-0.5, len(types) - 0.5)
    ax.invert_yaxis()
    ax.set_xlim(-0.2, max(run.end_s, 0.0) + 0.2)
    ax.grid(alpha=0.3, axis="x")
    if _fault_marks(ax, run):
        ax.set_title("Events (shaded or dashed: injected faults)")
        _legend(ax)
    else:
        ax.set_title("Events")
    return _save(figure, path)


def _fault_marks(ax: Axes, run: BenchRun) -> bool:
    """Shade each injected fault's window (`summary.json` "faults"), or draw a dashed line where
    it took no video time (a camera stall, the end of the stream); True when any was drawn."""
    faults = run.summary.get("faults")
    drawn = False
    for i, item in enumerate(faults if isinstance(faults, list) else []):
        if not isinstance(item, dict):
            continue
        color = FAULT_COLORS[i % len(FAULT_COLORS)]
        text = str(item.get("spec") or item.get("kind", "fault"))
        fired, until, start = item.get("fired_at_s"), item.get("until_s"), item.get("start_s")
        if not isinstance(fired, int | float):
            if isinstance(start, int | float):
                ax.axvline(float(start), color="grey", linestyle=":", label=f"{text} (not reached)")
                drawn = True
            continue
        end = float(until) if isinstance(until, int | float) else run.end_s
        if end > fired:
            ax.axvspan(float(fired), end, color=color, alpha=0.15, label=text)
        else:
            ax.axvline(float(fired), color=color, linestyle="--", linewidth=1.5, label=text)
        drawn = True
    return drawn


PLOTTERS = {
    "quality": plot_quality,
    "adhesion": plot_adhesion,
    "thermal": plot_thermal,
    "latency": plot_latency,
    "timeline": plot_timeline,
}


# -- stills --------------------------------------------------------------------------------


def write_stills(video: Path, strip: Path) -> Path | None:
    """A strip of `STRIP_FRAMES` stills spread over `video`; None when it has no frames."""
    capture = cv2.VideoCapture(str(video))
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    if width <= 0 or height <= 0:
        capture.release()
        return None
    scale = min(1.0, STILL_WIDTH / width)
    size = (round(width * scale), round(height * scale))
    picks = {round(i * max(count - 1, 0) / max(STRIP_FRAMES - 1, 1)) for i in range(STRIP_FRAMES)}
    stills: list[np.ndarray] = []
    index = 0
    while len(stills) < len(picks):
        ok, image = capture.read()
        if not ok:
            break
        if index in picks:
            stills.append(cv2.resize(image, size, interpolation=cv2.INTER_AREA))
        index += 1
    capture.release()
    if not stills:
        return None
    if not cv2.imwrite(str(strip), np.vstack(stills)):
        raise ReportError(strip, "cannot write image")
    return strip


# -- the page -------------------------------------------------------------------------------


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


IDENTIFIER = re.compile(r"[a-z]+(_[a-z0-9]+)+")
UNITS = {"s": "s", "ms": "ms", "c": "°C", "mb": "MB", "kb": "KiB", "mib": "MiB"}
LABELS = {
    "fps": "frames per second (wall clock)",
    "wall_s": "wall time (s)",
    "video_s": "video time (s)",
    "source_description": "source",
    "stop_reason": "stopped because",
    "config_digest": "config digest",
    "p95": "95th percentile",
}


def label(key: str) -> str:
    """A field name as a reader says it: `frames_dropped` → "Frames dropped", `blown_s` →
    "Blown (s)", `max_temperatures_c` → "Max temperatures (°C)"."""
    text = LABELS.get(key)
    if text is None:
        words = key.split("_")
        unit = UNITS.get(words[-1]) if len(words) > 1 else None
        text = " ".join(words[:-1] if unit else words).replace("->", " → ")
        text += f" ({unit})" if unit else ""
    return text[:1].upper() + text[1:]


def number(value: float) -> str:
    """A float without its noise: 14.600000000000001 → "14.6", 0.0569 → "0.057"."""
    if not math.isfinite(value):
        return str(value)
    digits = 1 if abs(value) >= 100 else 3
    text = f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def show(value: object) -> str:
    """A summary or event value as text: numbers rounded, nested fields as "a: 1, b: 2"."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return number(value)
    if isinstance(value, dict):
        return ", ".join(f"{label(str(k)).lower()}: {show(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(show(v) for v in value)
    if isinstance(value, str) and IDENTIFIER.fullmatch(value):
        return value.replace("_", " ")  # a reason such as end_of_stream
    return str(value)


def _time(value: object) -> str:
    return f"{value:.1f} s" if isinstance(value, int | float) else "?"


def verdict(run: BenchRun) -> str:
    """One line for the top of the page: what was put on the lens, when it was found, cleaned
    and cleared; what else happened; what was lost."""
    s = run.summary
    injected = s.get("injected")
    clauses = [
        _soiling_story(run, item)
        for item in (injected if isinstance(injected, list) else [])
        if isinstance(item, dict)
    ]
    if not clauses:
        alarms = len(run.events_of({"adhesion_detected"}))
        clauses.append(
            "no soiling injected" + (f", {alarms} soiling alarm(s) raised" if alarms else "")
        )
    control = s.get("control")
    if isinstance(control, dict):
        warnings, criticals = control.get("thermal_warnings"), control.get("thermal_criticals")
        if criticals:
            clauses.append(f"{criticals} thermal critical(s)")
        elif warnings:
            first = run.events_of({"thermal_warning"})
            when = f" (first at {_time(first[0].get('t'))})" if first else ""
            clauses.append(f"{warnings} thermal warning(s){when}")
    faults = s.get("faults")
    if isinstance(faults, list) and faults:
        clauses.append(f"{len(faults)} fault(s) injected")
    dropped = s.get("frames_dropped", 0)
    tail = f"{dropped} frame{'s' if dropped != 1 else ''} dropped"
    stop = s.get("stop_reason")
    if stop and stop != "end_of_stream":
        tail += f"; stopped: {stop}"
    return ", ".join(clauses) + "; " + tail


def _soiling_story(run: BenchRun, item: Mapping[str, object]) -> str:
    kind = str(item.get("kind", "soiling"))
    appeared = item.get("appeared_s")
    if not isinstance(appeared, int | float):
        return f"{kind} due at {_time(item.get('start_s'))}, never shown (the video ended)"
    story = [f"{kind} at {_time(appeared)}"]
    after = [e for e in run.events if isinstance(e.get("t"), int | float)]
    after = [e for e in after if float(e["t"]) >= float(appeared) - 0.05]  # type: ignore[arg-type]
    detected = next((e for e in after if e.get("type") == "adhesion_detected"), None)
    if detected is None:
        story.append("not detected")
        return ", ".join(story)
    t_detected = float(detected["t"])  # type: ignore[arg-type]
    story.append(f"detected after {t_detected - float(appeared):.1f} s")
    later = [e for e in after if float(e["t"]) >= t_detected]  # type: ignore[arg-type]
    types = [e.get("type") for e in later]
    if "cleaning_started" in types:
        story.append("cleaning failed" if "cleaning_failed" in types else "cleaned")
    cleared = next((e for e in later if e.get("type") == "adhesion_cleared"), None)
    story.append(
        f"cleared at {_time(cleared.get('t'))}" if cleared else "still detected at the end"
    )
    return ", ".join(story)


SUMMARY_KEYS = (
    "video",
    "source_description",
    "speed",
    "enhancer",
    "frames_in",
    "frames_out",
    "frames_dropped",
    "frames_missing",
    "frames_invalid",
    "fps",
    "wall_s",
    "video_s",
    "reconnects",
    "stop_reason",
    "seed",
    "version",
    "config_digest",
)


def _records(items: object) -> tuple[list[str], list[list[str]]]:
    """A list of flat dicts as a table: (header, rows), values shown."""
    rows = [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []
    keys = list(dict.fromkeys(k for item in rows for k in item))
    return [label(k) for k in keys], [[show(item.get(k)) for k in keys] for item in rows]


_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("vehicle_agent.sim", "templates"),
    autoescape=jinja2.select_autoescape(["html", "j2"]),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render_html(run: BenchRun, plots: Mapping[str, Path], strip: Path | None) -> str:
    """The report page (`templates/report.html.j2`): the verdict, the summary, the video, the
    plots (embedded), the event list."""
    s = run.summary
    latency = s.get("latency_ms")
    stages = [
        [stage, show(v.get("median")), show(v.get("p95"))]
        for stage, v in (latency.items() if isinstance(latency, dict) else [])
        if isinstance(v, dict)
    ]
    control = s.get("control")
    events = [
        [
            _time(e.get("t")),
            show(e.get("frame")),
            str(e.get("type")),
            "; ".join(
                f"{label(k).lower()}: {show(v)}"
                for k, v in e.items()
                if k not in {"t", "frame", "type"}
            ),
        ]
        for e in run.events
    ]
    return _TEMPLATES.get_template("report.html.j2").render(
        title=Path(str(s.get("video", ""))).name,
        verdict=verdict(run),
        summary=[[label(k), show(s[k])] for k in SUMMARY_KEYS if k in s],
        stages=stages,
        control=[[label(k), show(v)] for k, v in control.items()]
        if isinstance(control, dict)
        else [],
        injected=_records(s.get("injected")),
        faults=_records(s.get("faults")),
        video=SIDE_BY_SIDE if (run.directory / SIDE_BY_SIDE).is_file() else None,
        output_video="output.mp4" if (run.directory / "output.mp4").is_file() else None,
        strip=strip.name if strip is not None else None,
        plots=[(label(name), name, _data_uri(path)) for name, path in plots.items()],
        events=events,
    )


def write_report(directory: Path) -> Path:
    """Write the plots, the stills and `report.html` into `directory`; returns the page."""
    run = load_run(directory)
    plots = {name: PLOTTERS[name](run, directory / f"{name}.png") for name in PLOTS}
    side_by_side = directory / SIDE_BY_SIDE
    strip = write_stills(side_by_side, directory / STRIP) if side_by_side.is_file() else None
    (directory / LEGACY_PREVIEW).unlink(missing_ok=True)  # a rerun on an older report
    page = directory / HTML_NAME
    page.write_text(render_html(run, plots, strip), encoding="utf-8")
    return page
