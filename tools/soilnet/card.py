# ruff: noqa: ISC004 - the card is written one paragraph per list item
"""Soiling detector model card: `models/soilnet/MODEL_CARD.md` from its manifest and the
held-out evaluation (`python -m tools.eval_adhesion --json …`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vehicle_agent.enhance.manifest import MANIFEST_FILE, MODEL_CARD_FILE


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _table(rows: list[dict[str, Any]], columns: list[str]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(row.get(c)) for c in columns) + " |" for row in rows]
    return lines


def render(manifest: dict[str, Any], evaluation: dict[str, Any]) -> str:
    training = manifest["training"]
    metrics = manifest["metrics"]
    summary = evaluation.get("summary", {})
    lines = [
        f"# Model card: {manifest['name']} {manifest['version']}",
        "",
        "A lens soiling detector for the vehicle camera: per 8×8 tile of a "
        f"{manifest['net_width']}-pixel-wide copy of the raw frame, the probabilities of clean, "
        "transparent (water drops, mist), semi-transparent (dust) and opaque (mud) soiling. "
        "Runs in the analyze stage (`vehicle_agent/quality/soilnet.py`) on onnxruntime or TensorRT.",
        "",
        "## Input and method",
        "",
        f"- Input: {manifest['channels']} feature channels (`SoilFeatures` v{manifest['feature_version']}): "
        "the frame's colour, a running mean of the grey frame and its difference from it, recent "
        "change over 0.5 s and over 4 s, local Laplacian magnitude, and the frame-wide motion. "
        "What stays put while the world moves is soiling; when everything stands still the "
        "motion channels say so.",
        f"- Network: three stride-2 convolutions, dilated context convolutions (each "
        "batch-normalised, folded into the convolutions in the export), a 1×1 classifier, "
        f"softmax in the graph; {int(metrics['parameters'])} parameters, "
        f"{metrics['macs_192x112'] / 1e6:.1f} M multiply-adds per 192×112 input.",
        f"- Decision (in the daemon, not the graph): per-tile soiling log-odds smoothed over "
        f"0.3 s; a tile is soiled above {manifest['decision']['on']} and clean again below "
        f"{manifest['decision']['off']} (calibrated by training on its validation drives: the "
        "lowest threshold with tile precision ≥ 0.95 at which at most 0.2 % of the clean frames "
        f"would cross the alarm line; {metrics.get('val_clean_frame_alarms', 0):.2%} do); the "
        "alarm is the `[adhesion]` covered fraction.",
        "",
        "## Data",
        "",
        f"- {training['data']}.",
        "- Drives are made by the footage bank's synthesiser (forward motion, turns, shake, "
        "stand-stills, day/dusk/tunnel/night, passing vehicles); frames 640×360 or 480×360 at "
        "10–30 fps; soiling 0.5–30 % of the frame (mist 10–60 %), some blown off mid-drive.",
        "- Held out, never seen by training or calibration: the scenes and the renderer family "
        "that `tools/footage/splits.py` marks held out (the `refract` soiling family).",
        f"- Samples: {training['samples']}, {training['soiled_tile_share']:.1%} of tiles soiled.",
        "",
        "## Training",
        "",
        f"- Command: `{training['command']}` ({training['seconds'] / 60:.0f} min on 2 CPU cores, "
        f"{training['framework']}).",
        f"- Loss per epoch: {', '.join(f'{v:.3f}' for v in training['losses'])}.",
        f"- Validation (train scenes and families, other seeds): tile precision "
        f"{metrics['val_tile_precision']:.3f}, recall {metrics['val_tile_recall']:.3f}.",
        f"- ONNX export checked against torch: max abs difference {metrics['onnx_max_abs_diff']:.1e}.",
        "",
        "## Held-out figures",
        "",
        f"Command: `{evaluation.get('command', 'python -m tools.eval_adhesion')}`. "
        "Held-out scenes × held-out renderer first; the classical detector it replaces beside it.",
        "",
    ]
    if summary.get("soiled"):
        lines += _table(summary["soiled"], list(summary["soiled"][0]))
        lines.append("")
    if summary.get("clean"):
        lines += _table(summary["clean"], list(summary["clean"][0]))
        lines.append("")
    if summary.get("cost"):
        lines += _table(summary["cost"], list(summary["cost"][0]))
        lines.append("")
    lines += [
        "## Limits",
        "",
        "- Trained only on synthesised soiling over real frames: real drops, mud and dust look "
        "different again; the held-out renderer estimates the gap, it does not close it.",
        "- Camera motion is synthesised (only the handheld clips move for real); a vehicle's "
        "real optical flow, rolling shutter and lens flare are not in the data.",
        "- Tiles that are uniform or black give the network nothing to see: at night or over "
        "a clear sky, soiling there is found late or not at all.",
        "- Mist that veils the whole frame uniformly is hard to tell from fog or haze.",
        "",
    ]
    return "\n".join(lines)


def write(model_dir: Path, evaluation: dict[str, Any]) -> Path:
    manifest = json.loads((model_dir / MANIFEST_FILE).read_text())
    path = model_dir / MODEL_CARD_FILE
    path.write_text(render(manifest, evaluation))
    return path
