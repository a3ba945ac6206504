"""Service: `vehicle-agent status` — a summary of a running daemon, read from its metrics."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from vehicle_agent.records import STAGES, JsonValue
from vehicle_agent.service.metrics import PREFIX


class StatusError(Exception):
    """The daemon's endpoint cannot be read; the message says where and why."""


@dataclass
class Status:
    info: dict[str, str] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)
    labelled: dict[str, dict[str, float]] = field(default_factory=dict)
    fps: float | None = None
    """Output frames per second between two scrapes (`frames_out_total`'s rate); None: one scrape."""


def _scrape(url: str, timeout_s: float) -> Status:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - loopback only
            text = response.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise StatusError(f"{url}: no daemon answering ({reason})") from None
    status = Status()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name.removeprefix(f"{PREFIX}_")
            if sample.name == f"{PREFIX}_info":
                status.info.update(sample.labels)
            elif sample.name == f"{PREFIX}_enhancer_info":
                status.info["enhancer"] = sample.labels.get("backend", "")
            elif sample.name == f"{PREFIX}_control_info":
                status.info["fan_driver"] = sample.labels.get("fan_driver", "")
                status.info["alarms"] = sample.labels.get("alarms", "")
                status.info["cleaning"] = sample.labels.get("cleaning", "")
            elif sample.labels:
                labels = {k: v for k, v in sample.labels.items() if k != "le"}
                if len(labels) != len(sample.labels):
                    continue  # a histogram bucket
                label = next(iter(labels.values()))
                status.labelled.setdefault(name, {})[label] = sample.value
            else:
                status.values[name] = sample.value
    return status


def fetch_status(
    url: str,
    timeout_s: float = 3.0,
    interval_s: float = 1.0,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Status:
    """Scrape `url`; with `interval_s` > 0, scrape again after it to measure the frame rate."""
    if not url.startswith(("http://127.0.0.1", "http://localhost", "http://[::1]")):
        raise StatusError(f"{url}: the metrics endpoint only listens on loopback")
    first = _scrape(url, timeout_s)
    if interval_s <= 0:
        return first
    start = clock()
    sleep(interval_s)
    status = _scrape(url, timeout_s)
    elapsed = clock() - start
    frames = status.values.get("frames_out_total", 0.0) - first.values.get("frames_out_total", 0.0)
    # A restarted pipeline carries its counters on, so they never go backwards.
    status.fps = max(frames, 0.0) / elapsed
    return status


def stage_rows(status: Status) -> list[dict[str, JsonValue]]:
    """One row per stage, in flow order: frames handled, mean time per frame, failures."""
    v = status.values
    count = status.labelled.get("stage_latency_seconds_count", {})
    total = status.labelled.get("stage_latency_seconds_sum", {})
    failures = status.labelled.get("stage_failures_total", {})
    rows: list[dict[str, JsonValue]] = []
    for stage in STAGES:
        if stage == "capture":
            rows.append(
                {
                    "stage": stage,
                    "frames": int(v.get("frames_in_total", 0)),
                    "missing": int(v.get("frames_missing_total", 0)),
                    "invalid": int(v.get("frames_invalid_total", 0)),
                    "reconnects": int(v.get("source_reconnects_total", 0)),
                }
            )
            continue
        frames = int(count.get(stage, 0))
        mean = total.get(stage, 0.0) / frames * 1000 if frames else None
        rows.append(
            {
                "stage": stage,
                "frames": frames,
                "mean_ms": None if mean is None else round(mean, 3),
                "failures": int(failures.get(stage, 0)),
            }
        )
    return rows


def status_json(status: Status) -> dict[str, JsonValue]:
    """What `status --json` prints: the same figures as the text, as numbers."""
    v = status.values
    dropped = status.labelled.get("frames_dropped_total", {})
    uplink = {
        k.removeprefix("uplink_"): n
        for k, n in sorted(v.items())
        if k.startswith(("uplink_", "outbox_"))
    }
    quality = {
        k.removeprefix("quality_"): n for k, n in sorted(v.items()) if k.startswith("quality_")
    }
    return {
        "version": status.info.get("version"),
        "state": status.info.get("state"),
        "config": status.info.get("config"),
        "frames_in": int(v.get("frames_in_total", 0)),
        "frames_out": int(v.get("frames_out_total", 0)),
        "frames_dropped": int(sum(dropped.values())),
        "frames_dropped_by_queue": {k: int(n) for k, n in sorted(dropped.items())},
        "frames_missing": int(v.get("frames_missing_total", 0)),
        "fps": None if status.fps is None else round(status.fps, 2),
        "enhancer": status.info.get("enhancer"),
        "fan_duty": v.get("fan_duty_ratio"),
        "fan_driver": status.info.get("fan_driver") or None,
        "temperatures_c": dict(sorted(status.labelled.get("temperature_celsius", {}).items())),
        "alarms": [a for a in status.info.get("alarms", "").split(",") if a],
        "lens_service_required": bool(v.get("lens_service_required", 0)),
        "adhesion_score": v.get("adhesion_score_ratio"),
        "quality": dict(quality),
        "uplink": dict(uplink),
        "stages": [*stage_rows(status)],
    }


def _fan_driver(status: Status) -> str:
    driver = status.info.get("fan_driver")
    if not driver:
        return ""
    if driver == "none":
        return " (driver none: NO REAL FAN, see docs/service.md)"
    return f" ({driver})"


def _stage_line(row: dict[str, JsonValue]) -> str:
    stage = f"    {row['stage']:<8s}"
    if row["stage"] == "capture":
        return (
            f"{stage}{row['frames']} frames, {row['missing']} missing, {row['invalid']} invalid, "
            f"{row['reconnects']} reconnects"
        )
    mean = row["mean_ms"]
    timing = "" if mean is None else f", {mean:.1f} ms per frame"
    failures = f", {row['failures']} failed" if row["failures"] else ""
    return f"{stage}{row['frames']} frames{timing}{failures}"


def format_status(status: Status) -> str:
    v = status.values
    dropped = status.labelled.get("frames_dropped_total", {})
    fps = "" if status.fps is None else f", {status.fps:.1f} fps"
    lines = [
        (
            f"vehicle-agent {status.info.get('version', '?')}: {status.info.get('state', '?')} "
            f"(config {status.info.get('config', '?')})"
        ),
        (
            f"  frames   {int(v.get('frames_in_total', 0))} in, {int(v.get('frames_out_total', 0))} out, "
            f"{int(sum(dropped.values()))} dropped, {int(v.get('frames_missing_total', 0))} missing"
            f"{fps}"
        ),
        f"  source   {int(v.get('source_reconnects_total', 0))} reconnects",
        f"  enhance  {status.info.get('enhancer', '?')}",
        f"  fan      duty {v.get('fan_duty_ratio', 0.0):.2f}" + _fan_driver(status),
    ]
    temps = status.labelled.get("temperature_celsius", {})
    if temps:
        lines.append("  thermal  " + ", ".join(f"{k} {n:.1f} °C" for k, n in sorted(temps.items())))
    if "alarms_active" in v:
        names = status.info.get("alarms", "")
        lines.append(
            f"  alarms   {int(v['alarms_active'])} active" + (f": {names}" if names else "")
        )
    if v.get("lens_service_required"):
        lines.append("  LENS SERVICE REQUIRED: cleaning retries spent (clear_lens_service)")
    quality = {k.removeprefix("quality_"): n for k, n in v.items() if k.startswith("quality_")}
    if quality:
        shown = ", ".join(f"{k} {n:.1f}" for k, n in sorted(quality.items()))
        lines.append(f"  quality  {shown}")
    if "adhesion_score_ratio" in v:
        lines.append(f"  lens     adhesion score {v['adhesion_score_ratio']:.2f}")
    uplink = {k: n for k, n in v.items() if k.startswith(("uplink_", "outbox_"))}
    if uplink:
        lines.append("  uplink   " + ", ".join(f"{k} {n:g}" for k, n in sorted(uplink.items())))
    lines.append("  stages   (flow order)")
    lines.extend(_stage_line(row) for row in stage_rows(status))
    return "\n".join(lines)
