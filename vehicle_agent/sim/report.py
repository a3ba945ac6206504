"""Simulator's last step: plots and one offline `report.html` from the bench report's files.

It reads only what the run wrote (`summary.json`, `events.jsonl`, `frames.csv`, the videos), so
it can be run again on an old report directory. Plots use matplotlib's Agg canvas directly (no
pyplot, no display); the HTML embeds them as data URIs and needs nothing from the network.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

PLOTS = ("quality", "adhesion", "thermal", "latency", "timeline")
"""The PNG files written, `<name>.png`, in the order the report shows them."""

HTML_NAME = "report.html"
SIDE_BY_SIDE = "side_by_side.mp4"
PREVIEW = "side_by_side.webm"
"""A smaller copy of the side-by-side video in VP8/WebM, which browsers play; OpenCV's MP4
writer here has MPEG-4 Part 2 only (no H.264), which they do not."""
STRIP = "side_by_side_strip.png"
PREVIEW_WIDTH = 640
"""Pixels across the preview and the stills: VP8 takes about 25 ms a frame at this size."""
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
THERMAL_PREFIXES = ("thermal_", "sensor_", "mcu_", "actuator_")
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


def _legend(ax: Axes, ncols: int = 1) -> None:
    """A legend, when anything was drawn with a label (an empty run draws nothing)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", fontsize="small", ncols=ncols)


def _event_lines(ax: Axes, run: BenchRun, marks: Mapping[str, tuple[str, str]]) -> None:
    seen: set[str] = set()
    for event in run.events_of(marks):
        kind = str(event["type"])
        color, style = marks[kind]
        t = event.get("t")
        if isinstance(t, int | float):
            label = kind if kind not in seen else None
            ax.axvline(float(t), color=color, linestyle=style, linewidth=1.2, label=label)
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
        label = f"injected {item.get('kind', '?')}"
        if isinstance(appeared, int | float):
            for a in (ax, cov):
                a.axvspan(
                    float(appeared),
                    end,
                    color="tab:red",
                    alpha=0.15,
                    label=label if a is ax else None,
                )
        elif isinstance(start, int | float):
            ax.axvline(float(start), color="tab:red", linestyle=":", label=f"{label} (never shown)")
    ax.plot(t, run.series("adhesion_score"), color="black", linewidth=1.0, label="score")
    ax.plot(t, run.series("adhesion_detected"), color="tab:purple", linewidth=0.8, label="detected")
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=0.8, label="alarm threshold")
    _event_lines(ax, run, CLEANING_MARKS)
    ax.set_ylim(-0.05, 1.05)
    ax.set_ylabel("adhesion score")
    _legend(ax, ncols=3)
    ax.grid(alpha=0.3)
    ax.set_title("Lens adhesion: score vs injected ground truth (shaded), cleanings (lines)")
    cov.plot(t, run.series("adhesion_covered") * 100.0, color="tab:brown", label="covered")
    cov.set_ylabel("covered (% of frame)")
    cov.grid(alpha=0.3)
    fan = cov.twinx()
    fan.plot(t, run.series("fan_duty") * 100.0, color="tab:blue", alpha=0.6, label="fan duty")
    fan.set_ylabel("fan duty (%)")
    fan.set_ylim(-5, 105)
    handles = [*cov.get_legend_handles_labels()[0], *fan.get_legend_handles_labels()[0]]
    cov.legend(handles=handles, loc="upper left", fontsize="small")
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
            temp.plot(t, values, label=name.removesuffix("_c"), linewidth=1.0)
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
    marks = {
        str(e["type"]): ("tab:red" if "critical" in str(e["type"]) else "tab:orange", ":")
        for e in run.events
        if str(e.get("type", "")).startswith(THERMAL_PREFIXES)
    }
    _event_lines(temp, run, marks)
    temp.set_ylabel("°C")
    _legend(temp, ncols=4)
    temp.grid(alpha=0.3)
    return _save(figure, path)


def plot_latency(run: BenchRun, path: Path) -> Path:
    """Latency of each stage per frame (ms)."""
    figure, (ax,) = _figure(1, 3.0)
    t = run.t
    for name in run.columns:
        if name.endswith("_ms"):
            ax.plot(t, run.series(name), label=name.removesuffix("_ms"), linewidth=0.9)
    ax.set_ylabel("ms")
    ax.set_yscale("symlog", linthresh=1.0)
    _legend(ax, ncols=5)
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
        ax.legend(loc="best", fontsize="small")
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
        label = str(item.get("spec") or item.get("kind", "fault"))
        fired, until, start = item.get("fired_at_s"), item.get("until_s"), item.get("start_s")
        if not isinstance(fired, int | float):
            if isinstance(start, int | float):
                ax.axvline(
                    float(start), color="grey", linestyle=":", label=f"{label} (not reached)"
                )
                drawn = True
            continue
        end = float(until) if isinstance(until, int | float) else run.end_s
        if end > fired:
            ax.axvspan(float(fired), end, color=color, alpha=0.15, label=label)
        else:
            ax.axvline(float(fired), color=color, linestyle="--", linewidth=1.5, label=label)
        drawn = True
    return drawn


PLOTTERS = {
    "quality": plot_quality,
    "adhesion": plot_adhesion,
    "thermal": plot_thermal,
    "latency": plot_latency,
    "timeline": plot_timeline,
}


# -- video previews -------------------------------------------------------------------------


def write_previews(video: Path, preview: Path, strip: Path) -> dict[str, Path]:
    """A browser-playable WebM copy of `video` and a strip of stills from it.

    Returns the files written (none when `video` has no frames)."""
    capture = cv2.VideoCapture(str(video))
    fps = capture.get(cv2.CAP_PROP_FPS) or 10.0
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    written: dict[str, Path] = {}
    if width <= 0 or height <= 0:
        capture.release()
        return written
    scale = min(1.0, PREVIEW_WIDTH / width)
    size = (round(width * scale) // 2 * 2, round(height * scale) // 2 * 2)
    # OpenCV prints that WebM has no tag for 'VP80' and then writes VP8 anyway (harmless; it
    # prints with fprintf, which no log level silences).
    writer: cv2.VideoWriter | None = cv2.VideoWriter(
        str(preview), cv2.VideoWriter.fourcc(*"VP80"), fps, size
    )
    if writer is not None and not writer.isOpened():
        logger.warning("report: no VP8 encoder here; %s not written", preview.name)
        writer = None
    picks = {round(i * max(count - 1, 0) / max(STRIP_FRAMES - 1, 1)) for i in range(STRIP_FRAMES)}
    stills: list[np.ndarray] = []
    index = 0
    while True:
        ok, image = capture.read()
        if not ok:
            break
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        if writer is not None:
            writer.write(small)
        if index in picks:
            stills.append(small)
        index += 1
    capture.release()
    if writer is not None:
        writer.release()
        if index:
            written["preview"] = preview
    if stills:
        if not cv2.imwrite(str(strip), np.vstack(stills)):
            raise ReportError(strip, "cannot write image")
        written["strip"] = strip
    return written


# -- HTML -----------------------------------------------------------------------------------


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _cell(value: object) -> str:
    if isinstance(value, dict | list):
        return f"<code>{html.escape(json.dumps(value))}</code>"
    return html.escape("" if value is None else str(value))


def _table(rows: Iterable[tuple[object, ...]], header: Sequence[str] | None = None) -> str:
    out = io.StringIO()
    out.write("<table>")
    if header:
        out.write("<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
    for row in rows:
        out.write("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>")
    out.write("</table>\n")
    return out.getvalue()


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

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 2px 8px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
img, video { max-width: 100%; border: 1px solid #ddd; }
.note { color: #555; font-size: 0.9em; }
code { font-size: 0.85em; }
"""


def _video_section(videos: Mapping[str, Path]) -> str:
    parts: list[str] = []
    if "preview" in videos:
        parts.append(
            f"<video controls muted loop preload='metadata' src='{videos['preview'].name}'>"
            "</video>\n"
        )
    parts.append(
        "<p class='note'>Left: the raw frame with the adhesion detector's soiled tiles in red; "
        "right: the enhanced frame; text: video time, adhesion score, fan duty, cleaning state "
        "and module temperatures. "
    )
    if "preview" in videos:
        parts.append(f"The player shows <code>{PREVIEW}</code> (VP8, reduced size). ")
    else:
        parts.append("No browser-playable copy could be written on this machine. ")
    parts.append(
        f"The full-size <a href='{SIDE_BY_SIDE}'>{SIDE_BY_SIDE}</a> and "
        "<a href='output.mp4'>output.mp4</a> are MPEG-4 Part 2 (OpenCV's writer has no H.264 "
        "here), which browsers do not play: open them with a video player.</p>\n"
    )
    return "".join(parts)


def render_html(run: BenchRun, plots: Mapping[str, Path], videos: Mapping[str, Path]) -> str:
    """The report page: summary, the video, the plots (embedded), the event list."""
    s = run.summary
    parts: list[str] = [
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n",
        f"<title>Bench report: {html.escape(Path(str(s.get('video', ''))).name)}</title>\n",
        f"<style>{STYLE}</style>\n</head>\n<body>\n",
        "<h1>Bench simulator report</h1>\n",
        "<h2>Summary</h2>\n",
        _table((k, s[k]) for k in SUMMARY_KEYS if k in s),
    ]
    latency = s.get("latency_ms")
    if isinstance(latency, dict) and latency:
        stages = [
            (stage, v.get("median"), v.get("p95"))
            for stage, v in latency.items()
            if isinstance(v, dict)
        ]
        parts += ["<h3>Latency per stage (ms)</h3>\n", _table(stages, ("stage", "median", "p95"))]
    control = s.get("control")
    if isinstance(control, dict) and control:
        parts += ["<h3>Control</h3>\n", _table(control.items())]
    injected = s.get("injected")
    if isinstance(injected, list) and injected:
        keys = list(dict.fromkeys(k for item in injected if isinstance(item, dict) for k in item))
        truth = [tuple(item.get(k) for k in keys) for item in injected if isinstance(item, dict)]
        parts += ["<h3>Injected soiling (ground truth)</h3>\n", _table(truth, keys)]
    faults = s.get("faults")
    if isinstance(faults, list) and faults:
        keys = list(dict.fromkeys(k for item in faults if isinstance(item, dict) for k in item))
        rows = [tuple(item.get(k) for k in keys) for item in faults if isinstance(item, dict)]
        note = (
            "<p class='note'>Times are video time, seconds; <code>fired_at_s</code>: the frame "
            "at which the fault took effect (empty: the run ended before it); a camera stall "
            "gives no frames for <code>end_s - start_s</code> wall seconds while video time "
            "stands still. Their effects are in the events below.</p>\n"
        )
        parts += ["<h3>Injected faults</h3>\n", note, _table(rows, keys)]
    parts.append("<h2>Video</h2>\n")
    if not (run.directory / SIDE_BY_SIDE).is_file():
        parts.append("<p class='note'>No frames were written: there is no video.</p>\n")
    else:
        parts.append(_video_section(videos))
    if "strip" in videos:
        parts.append(
            f"<h3>Stills</h3>\n<img alt='stills from the side-by-side video' "
            f"src='{videos['strip'].name}'>\n"
        )
    parts.append("<h2>Plots</h2>\n")
    for name, path in plots.items():
        parts.append(f"<h3>{html.escape(name)}</h3>\n<img alt='{name}' src='{_data_uri(path)}'>\n")
    parts.append(f"<h2>Events ({len(run.events)})</h2>\n")
    rows = [
        (
            e.get("t"),
            e.get("frame"),
            e.get("type"),
            {k: v for k, v in e.items() if k not in {"t", "frame", "type"}},
        )
        for e in run.events
    ]
    parts.append(_table(rows, ("t (s)", "frame", "type", "fields")))
    parts.append("</body>\n</html>\n")
    return "".join(parts)


def write_report(directory: Path) -> Path:
    """Write the plots, the video previews and `report.html` into `directory`; returns the page."""
    run = load_run(directory)
    plots = {name: PLOTTERS[name](run, directory / f"{name}.png") for name in PLOTS}
    videos: dict[str, Path] = {}
    side_by_side = directory / SIDE_BY_SIDE
    if side_by_side.is_file():
        videos = write_previews(side_by_side, directory / PREVIEW, directory / STRIP)
    page = directory / HTML_NAME
    page.write_text(render_html(run, plots, videos), encoding="utf-8")
    return page
