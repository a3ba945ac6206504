"""Service: `vehicle-agent status` — a human summary of a running daemon, read from its metrics."""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from vehicle_agent.service.metrics import PREFIX


class StatusError(Exception):
    """The daemon's endpoint cannot be read; the message says where and why."""


@dataclass
class Status:
    info: dict[str, str] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)
    labelled: dict[str, dict[str, float]] = field(default_factory=dict)


def fetch_status(url: str, timeout_s: float = 3.0) -> Status:
    if not url.startswith(("http://127.0.0.1", "http://localhost", "http://[::1]")):
        raise StatusError(f"{url}: the metrics endpoint only listens on loopback")
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
            elif sample.labels:
                label = next(iter(sample.labels.values()))
                status.labelled.setdefault(name, {})[label] = sample.value
            else:
                status.values[name] = sample.value
    return status


def _fan_driver(status: Status) -> str:
    driver = status.info.get("fan_driver")
    if not driver:
        return ""
    if driver == "none":
        return " (driver none: NO REAL FAN, see docs/service.md)"
    return f" ({driver})"


def format_status(status: Status) -> str:
    v = status.values
    dropped = status.labelled.get("frames_dropped_total", {})
    failures = {k: n for k, n in status.labelled.get("stage_failures_total", {}).items() if n}
    latency = status.labelled.get("stage_latency_seconds_count", {})
    lines = [
        (
            f"vehicle-agent {status.info.get('version', '?')}: {status.info.get('state', '?')} "
            f"(config {status.info.get('config', '?')})"
        ),
        (
            f"  frames   {int(v.get('frames_in_total', 0))} in, {int(v.get('frames_out_total', 0))} out, "
            f"{int(sum(dropped.values()))} dropped, {int(v.get('frames_missing_total', 0))} missing, "
            f"{v.get('fps', 0.0):.1f} fps"
        ),
        f"  source   {int(v.get('source_reconnects_total', 0))} reconnects",
        f"  enhance  {status.info.get('enhancer', '?')}",
        f"  fan      duty {v.get('fan_duty', 0.0):.2f}" + _fan_driver(status),
    ]
    temps = status.labelled.get("temperature_celsius", {})
    if temps:
        lines.append("  thermal  " + ", ".join(f"{k} {n:.1f} °C" for k, n in sorted(temps.items())))
    if "alarms" in v:
        names = status.info.get("alarms", "")
        lines.append(f"  alarms   {int(v['alarms'])} active" + (f": {names}" if names else ""))
    if v.get("lens_service_required"):
        lines.append("  LENS SERVICE REQUIRED: cleaning retries spent (clear_lens_service)")
    quality = status.labelled.get("quality", {})
    if quality:
        shown = ", ".join(f"{k} {n:.1f}" for k, n in sorted(quality.items()))
        lines.append(f"  quality  {shown}")
    if "adhesion_score" in v:
        lines.append(f"  lens     adhesion score {v['adhesion_score']:.2f}")
    uplink = status.labelled.get("uplink", {})
    if uplink:
        lines.append("  uplink   " + ", ".join(f"{k} {n:g}" for k, n in sorted(uplink.items())))
    if failures:
        lines.append("  failures " + ", ".join(f"{k} {int(n)}" for k, n in failures.items()))
    if latency:
        lines.append(f"  stages   {', '.join(sorted(latency))}")
    return "\n".join(lines)
