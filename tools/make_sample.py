"""Developer tool: cut the bundled sample footage from Debian's opencv-doc `vtest.avi`.

The committed `vehicle_agent/sim/samples/street_vtest.mp4` was made with:

    apt-get download opencv-doc
    dpkg-deb --fsys-tarfile opencv-doc_*.deb | tar -x ./usr/share/doc/opencv-doc/examples/data/vtest.avi
    python -m tools.make_sample usr/share/doc/opencv-doc/examples/data/vtest.avi

It keeps the first 300 frames (30 s at the source's 10 fps), unscaled, re-encoded as MPEG-4 Part 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "vehicle_agent/sim/samples/street_vtest.mp4"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("vtest", type=Path, help="path to vtest.avi from opencv-doc")
    parser.add_argument("--frames", type=int, default=300, help="frames to keep")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    cap = cv2.VideoCapture(str(args.vtest))
    if not cap.isOpened():
        parser.error(f"{args.vtest}: cannot open")
    fps = cap.get(cv2.CAP_PROP_FPS) or 10.0
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    writer = cv2.VideoWriter(str(args.out), cv2.VideoWriter.fourcc(*"mp4v"), fps, size)
    written = 0
    while written < args.frames:
        ok, frame = cap.read()
        if not ok:
            break
        writer.write(frame)
        written += 1
    writer.release()
    cap.release()
    print(f"{args.out}: {written} frames, {size[0]}x{size[1]} @ {fps:g} fps")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
