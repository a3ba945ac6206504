"""Developer tool: time the analyze stage (quality monitor and adhesion detector) per frame.

    python -m tools.bench_analysis                 # 1280×720, writes build/bench-analysis.json
    python -m tools.bench_analysis --size 1920x1080 --frames 500 --json out.json

The learned detector (`[adhesion] detector = "learned"`, `models/soilnet` or `--model DIR`) is
timed alone and inside the monitor as the daemon runs it (its network on every
`every_n_frames`-th frame, 2 by default). Frames are the bundled street clip resized to
`--size` (real content: the detector's work depends on what it sees). Each part runs on the
same frames, one after the other, on this machine's cores as OpenCV uses them in the daemon;
medians and 95th percentiles in ms. BRISQUE is timed when its model files are found (Debian's opencv-data, or
$VEHICLE_AGENT_BRISQUE_DIR); the monitor scores one frame per second of video with it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from vehicle_agent.quality.adhesion import AdhesionDetector
from vehicle_agent.quality.brisque import BrisqueScorer, find_model_dir
from vehicle_agent.quality.metrics import measure, prepare
from vehicle_agent.quality.monitor import MonitorSettings, QualityMonitor
from vehicle_agent.records import Image
from vehicle_agent.sim.simulate import sample_video

FPS = 10.0


def frames(size: tuple[int, int], count: int) -> list[Image]:
    cap = cv2.VideoCapture(str(sample_video()))
    out: list[Image] = []
    while len(out) < count:
        ok, frame = cap.read()
        if not ok:
            break
        out.append(np.ascontiguousarray(cv2.resize(frame, size, interpolation=cv2.INTER_AREA)))
    cap.release()
    return out


def timed(work: Callable[[int], object], count: int) -> dict[str, float]:
    work(0)  # warm caches
    samples = []
    for i in range(count):
        start = time.perf_counter()
        work(i)
        samples.append(time.perf_counter() - start)
    ordered = sorted(samples)
    return {
        "median_ms": round(statistics.median(samples) * 1000, 3),
        "p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] * 1000, 3),
    }


def run(
    size: tuple[int, int], count: int, width: int, model: Path | None = None
) -> dict[str, object]:
    clip = frames(size, count)
    n = len(clip)
    small = [prepare(f, width) for f in clip]
    detector = AdhesionDetector()
    plain = QualityMonitor(MonitorSettings(analysis_width=width, brisque=False))
    shown = QualityMonitor(MonitorSettings(analysis_width=width, brisque=False))
    results: dict[str, dict[str, float]] = {
        "downscale (prepare)": timed(lambda i: prepare(clip[i % n], width), count),
        "quality metrics (measure)": timed(lambda i: measure(small[i % n]), count),
        "adhesion detector": timed(lambda i: detector.update(small[i % n].grey, i / FPS), count),
        "monitor + detector, raw frame shown": timed(
            lambda i: plain.analyze(clip[i % n], i / FPS), count
        ),
        "monitor + detector, enhanced frame shown": timed(
            lambda i: shown.analyze(clip[i % n], i / FPS, clip[(i + 1) % n]), count
        ),
    }
    learned_settings = MonitorSettings(analysis_width=width, brisque=False, detector="learned")
    if model is not None:
        learned_settings = dataclasses.replace(
            learned_settings, detector_model=model.name, model_dirs=(model.parent,)
        )
    learned = QualityMonitor(learned_settings)
    detector_label = learned.detector_label
    if learned.learned is not None:
        net = learned.learned
        every = "every frame" if net.every == 1 else f"network every {net.every} frames"
        results[f"learned detector ({detector_label}, {every})"] = timed(
            lambda i: net.update(small[i % n].colour, i / FPS), count
        )
        results["monitor + learned detector, raw frame shown"] = timed(
            lambda i: learned.analyze(clip[i % n], i / FPS), count
        )
    else:
        print(f"learned detector not timed: {learned.detector_fallback}")
    if find_model_dir() is not None:
        scorer = BrisqueScorer()
        scorer.load()
        results["BRISQUE (one frame)"] = timed(lambda i: scorer.score(small[i % n].grey), 50)
    return {
        "size": f"{size[0]}x{size[1]}",
        "analysis_width": width,
        "frames": count,
        "machine": {
            "cpus": os.cpu_count(),
            "opencv_threads": cv2.getNumThreads(),
            "python": platform.python_version(),
            "opencv": cv2.__version__,
            "processor": platform.processor() or platform.machine(),
        },
        "learned_detector": detector_label,
        "results": results,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1280x720", help="frame size WxH (default 1280x720)")
    parser.add_argument("--frames", type=int, default=300, help="frames timed per part")
    parser.add_argument("--width", type=int, default=320, help="analysis width (default 320)")
    parser.add_argument("--json", type=Path, default=Path("build/bench-analysis.json"))
    parser.add_argument(
        "--model", type=Path, help="the learned detector's model folder (default: the shipped one)"
    )
    args = parser.parse_args(argv)
    try:
        w, h = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        parser.error(f"--size {args.size!r}: expected WxH, e.g. 1280x720")
    report = run((w, h), args.frames, args.width, args.model)
    print(f"analysis cost per {report['size']} frame ({args.frames} frames, median / p95):")
    results = report["results"]
    assert isinstance(results, dict)  # noqa: S101
    for name, r in results.items():
        print(f"  {name:56s} {r['median_ms']:7.2f} ms  {r['p95_ms']:7.2f} ms")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"  written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
