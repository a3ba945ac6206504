"""`vehicle-agent run` whose enhance stage hangs for good on a frame (a driver or model runtime
stuck in C, as seen from Python): the test hook of tests/test_service.py's hung-stage test.

    python -m tests.hung_enhance CONFIG MARKER FRAMES

After FRAMES frames, the classical backend never returns; just before, MARKER gets the
`time.monotonic()` of the hang (the same clock in every process on Linux).
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from vehicle_agent.cli import main
from vehicle_agent.enhance.classical import ClassicalEnhancer
from vehicle_agent.records import Image


def hang_after(frames: int, marker: Path) -> None:
    original = ClassicalEnhancer.enhance
    seen = 0

    def enhance(self: ClassicalEnhancer, image: Image) -> Image:
        nonlocal seen
        seen += 1
        if seen > frames:
            marker.write_text(repr(time.monotonic()))
            threading.Event().wait()  # never returns
        return original(self, image)

    ClassicalEnhancer.enhance = enhance  # type: ignore[method-assign,assignment]


if __name__ == "__main__":
    config, marker, frames = sys.argv[1:4]
    hang_after(int(frames), Path(marker))
    raise SystemExit(main(["run", "--config", config]))
