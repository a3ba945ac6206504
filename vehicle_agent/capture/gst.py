"""Capture: `GstSource` runs a GStreamer pipeline in gst-launch-1.0 and reads its frames as Y4M.

The pipeline runs in a child process rather than through GStreamer's Python bindings or
OpenCV's GStreamer backend (which the PyPI OpenCV wheels lack): a crashing or wedged plugin
takes down only the child, and `close()` can always end it with a signal. The child's stdout
carries `y4menc` output that `Y4mParser` decodes; its stderr gives the reason when it fails.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import select
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

from vehicle_agent.capture.base import FrameSource, RawFrame, SourceError, SourceInfo
from vehicle_agent.capture.y4m import Y4mError, Y4mLayout, Y4mParser

if TYPE_CHECKING:
    from vehicle_agent.capture.y4m import Y4mHeader

logger = logging.getLogger(__name__)

GST_LAUNCH = "gst-launch-1.0"
OUTPUT_TAIL = ("videoconvert", "!", "video/x-raw,format=I420", "!", "y4menc", "!", "fdsink", "fd=1")
"""Appended to every pipeline (after a `!`): whatever the pipeline ends with becomes I420 Y4M."""
CHUNK_BYTES = 1 << 20
PIPE_BYTES = 1 << 20
"""Pipe capacity asked for (Linux allows up to 1 MiB unprivileged): fewer reads per frame."""
POLL_S = 0.2
"""Longest a blocked read waits before looking whether `close()` was called."""
STDERR_LINES = 50
STDERR_LINE_BYTES = 2000
_NOISE_PREFIXES = (
    "Setting pipeline to",
    "Freeing pipeline",
    "Pipeline is ",
    "Execution ended after",
    "Got EOS",
    "Got context",
    "Redistribute latency",
    "New clock",
    "Additional debug info:",
    "Interrupt:",
    "Handling interrupt",
    "Prerolled",
)


def _line_text(raw: bytes) -> str:
    return raw[:STDERR_LINE_BYTES].decode("utf-8", "replace").rstrip()


def failure_reason(lines: list[str]) -> str | None:
    """The most useful line of gst-launch-1.0's stderr, or None when it said nothing useful.

    gst-launch-1.0 reports a pipeline it cannot build as `WARNING: erroneous pipeline: <why>`
    and a runtime failure as `ERROR: from element /GstPipeline:pipeline0/<Type>:<name>: <what>`
    followed by a source location and, sometimes, a detail line (e.g. `No such file "/x"`);
    later ERROR lines are mostly consequences of the first.
    """
    for line in lines:
        if line.startswith("WARNING: erroneous pipeline:"):
            return line.removeprefix("WARNING: erroneous pipeline:").strip()
    for i, line in enumerate(lines):
        if line.startswith("ERROR: from element "):
            where, _, what = line.removeprefix("ERROR: from element ").partition(": ")
            element = where.rsplit(":", 1)[-1]
            reason = f"{element}: {what.strip()}"
            # Detail line: after "Additional debug info:" and the source location line.
            if lines[i + 1 : i + 2] == ["Additional debug info:"] and i + 3 < len(lines):
                detail = lines[i + 3].strip()
                if detail and not detail.startswith(("ERROR:", "WARNING:")):
                    reason += f" ({detail})"
            return reason
    meaningful = [
        line.strip() for line in lines if line.strip() and not line.startswith(_NOISE_PREFIXES)
    ]
    return meaningful[-1] if meaningful else None


def _exit_text(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


_layout_lock = threading.Lock()
_layouts: dict[str, Y4mLayout] = {}


def y4menc_layout(gst_launch: str, timeout_s: float = 10.0) -> Y4mLayout:
    """How the installed y4menc lays out frames whose rows GStreamer pads (see `Y4mLayout`).

    Asks it once per gst-launch-1.0 binary with a 2x2 frame: 6 bytes is the YUV4MPEG2 layout,
    16 bytes GStreamer's padded one. If the probe fails, the real pipeline will fail the same
    way and report why, so PACKED is returned without remembering it.
    """
    with _layout_lock:
        if gst_launch in _layouts:
            return _layouts[gst_launch]
    argv = [gst_launch, "-q", "videotestsrc", "num-buffers=1", "!", "video/x-raw,width=2,height=2"]
    try:
        result = subprocess.run(
            [*argv, "!", *OUTPUT_TAIL],
            capture_output=True,
            timeout=timeout_s,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        logger.warning(f"cannot probe y4menc, assuming it writes packed frames: {exc}")
        return Y4mLayout.PACKED
    frame = result.stdout.partition(b"\nFRAME\n")[2]
    if result.returncode != 0 or len(frame) not in {6, 16}:
        logger.warning(
            f"cannot probe y4menc ({_exit_text(result.returncode)}, {len(frame)} bytes "
            "for a 2x2 frame), assuming it writes packed frames"
        )
        return Y4mLayout.PACKED
    layout = Y4mLayout.PACKED if len(frame) == 6 else Y4mLayout.GST_PADDED
    with _layout_lock:
        _layouts[gst_launch] = layout
    return layout


class _StderrTail:
    """Reads a child's stderr to the end in a thread, keeping its last lines.

    A pipeline that logs a lot must never block on a full stderr pipe, so it is always drained;
    the deque bounds what is kept.
    """

    def __init__(self, stream: IO[bytes]) -> None:
        self._lines: deque[str] = deque(maxlen=STDERR_LINES)
        self._thread = threading.Thread(
            target=self._drain, args=(stream,), name="gst-stderr", daemon=True
        )
        self._thread.start()

    def _drain(self, stream: IO[bytes]) -> None:
        with stream:
            for raw in iter(lambda: stream.readline(STDERR_LINE_BYTES), b""):
                self._lines.append(_line_text(raw))

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)

    @property
    def lines(self) -> list[str]:
        return list(self._lines)


@dataclass(slots=True)
class _Child:
    proc: subprocess.Popen[bytes]
    stdout: int
    """Read end of the pipe that is the child's stdout (owned by us, closed by close())."""
    stderr: _StderrTail


class GstSource(FrameSource):
    """A GStreamer pipeline (gst-launch-1.0 syntax, without a sink) run as a child process.

    `pipeline` is split with shlex, so caps with spaces or parentheses can be quoted. Frames are
    BGR; odd sizes are cropped to even (see `vehicle_agent.capture.y4m`). `close()` from another
    thread makes a blocked `read()` return None within about POLL_S, then stops the child: EOS
    first, SIGTERM to its process group after eos_grace_s, SIGKILL after kill_grace_s more.
    """

    def __init__(
        self,
        uri: str,
        pipeline: str,
        live: bool = True,
        *,
        open_timeout_s: float = 10.0,
        eos_grace_s: float = 1.0,
        kill_grace_s: float = 1.0,
        gst_launch: str = GST_LAUNCH,
    ) -> None:
        """`open_timeout_s`: longest wait for the first frame; `eos_grace_s`: how long close()
        lets the pipeline stop cleanly before SIGTERM; `kill_grace_s`: from SIGTERM to SIGKILL."""
        super().__init__(uri)
        self.pipeline = pipeline
        self.live = live
        self.open_timeout_s = open_timeout_s
        self.eos_grace_s = eos_grace_s
        self.kill_grace_s = kill_grace_s
        self.gst_launch = gst_launch
        self._state_lock = threading.Lock()
        self._read_lock = threading.Lock()
        """Held while stdout is read, so close() never closes the pipe under a reader."""
        self._child: _Child | None = None
        self._parser = Y4mParser()
        self._closing = False

    @property
    def pid(self) -> int | None:
        """Process id (and process group id) of the running gst-launch-1.0, for diagnostics."""
        child = self._child
        return child.proc.pid if child is not None else None

    def argv(self, gst_launch: str | None = None) -> list[str]:
        """The command line that runs the pipeline. Raises `SourceError` if it cannot be split."""
        try:
            tokens = shlex.split(self.pipeline)
        except ValueError as exc:
            raise SourceError(self.uri, f"cannot split the pipeline: {exc}") from None
        if not tokens:
            raise SourceError(self.uri, "empty pipeline")
        return [gst_launch or self.gst_launch, "-q", "-e", *tokens, "!", *OUTPUT_TAIL]

    def open(self) -> SourceInfo:
        self.close()
        executable = shutil.which(self.gst_launch)
        if executable is None:
            raise SourceError(self.uri, f"{GST_LAUNCH} not found: install gstreamer1.0-tools")
        argv = self.argv(executable)
        parser = Y4mParser(y4menc_layout(executable, self.open_timeout_s))
        child = self._start(argv)
        with self._state_lock:
            self._child = child
            self._parser = parser
            self._closing = False
        try:
            header = self._await_header(child)
        except SourceError:
            self.close()
            raise
        return SourceInfo(
            width=header.frame_width,
            height=header.frame_height,
            fps=header.fps,
            live=self.live,
            description=self._describe(header),
        )

    def _start(self, argv: list[str]) -> _Child:
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        try:
            # Own process group: close() signals the whole group, children included.
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out_write,
                stderr=err_write,
                start_new_session=True,
            )
        except OSError as exc:
            os.close(out_read)
            os.close(err_read)
            raise SourceError(self.uri, f"cannot start {GST_LAUNCH}: {exc}") from None
        finally:
            # Only the child may hold the write ends, or we would never see end-of-file.
            os.close(out_write)
            os.close(err_write)
        with contextlib.suppress(OSError):
            fcntl.fcntl(out_read, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        return _Child(proc, out_read, _StderrTail(os.fdopen(err_read, "rb")))

    def _describe(self, header: Y4mHeader) -> str:
        fps = f"{header.fps:g} fps" if header.fps is not None else "unknown fps"
        size = f"{header.frame_width}x{header.frame_height}"
        text = f"gst pipeline '{self.pipeline}': {size} @ {fps}"
        if (header.frame_width, header.frame_height) != (header.width, header.height):
            text += f" (cropped from {header.width}x{header.height})"
        return text

    def _await_header(self, child: _Child) -> Y4mHeader:
        deadline = time.monotonic() + self.open_timeout_s
        with self._read_lock:
            while True:
                header = self._parser.header
                if header is not None:
                    return header
                if self._closing:
                    raise SourceError(self.uri, "closed while opening")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise SourceError(
                        self.uri, f"no video from the pipeline within {self.open_timeout_s:g} s"
                    )
                chunk = self._read_chunk(child, min(remaining, POLL_S))
                if chunk is None:
                    continue
                if not chunk:
                    if self._closing:
                        raise SourceError(self.uri, "closed while opening")
                    raise SourceError(self.uri, self._exit_reason(child, "before its first frame"))
                self._feed(chunk)

    def read(self) -> RawFrame | None:
        with self._read_lock:
            child = self._child
            if child is None:
                raise SourceError(self.uri, "read() on a source that is not open")
            while True:
                try:
                    frame = self._parser.next_frame()
                except Y4mError as exc:
                    raise SourceError(
                        self.uri, f"corrupt stream from {GST_LAUNCH}: {exc}"
                    ) from None
                if frame is not None:
                    header = self._parser.header
                    fps = header.fps if header is not None else None
                    return RawFrame(image=frame.image, pts=frame.index / fps if fps else None)
                if self._closing:
                    return None
                chunk = self._read_chunk(child, POLL_S)
                if chunk is None:
                    continue
                if not chunk:
                    self._check_end(child)
                    return None
                self._feed(chunk)

    def _read_chunk(self, child: _Child, timeout_s: float) -> bytes | None:
        """Up to CHUNK_BYTES of stdout; b"" at the end, None if nothing came within timeout_s."""
        ready, _, _ = select.select([child.stdout], [], [], timeout_s)
        if not ready:
            return None
        try:
            return os.read(child.stdout, CHUNK_BYTES)
        except OSError as exc:
            raise SourceError(self.uri, f"cannot read from {GST_LAUNCH}: {exc}") from None

    def _feed(self, chunk: bytes) -> None:
        try:
            self._parser.feed(chunk)
        except Y4mError as exc:
            raise SourceError(self.uri, f"corrupt stream from {GST_LAUNCH}: {exc}") from None

    def _check_end(self, child: _Child) -> None:
        """stdout ended: fine when the pipeline finished (EOS), SourceError when it failed."""
        returncode = self._wait_exit(child)
        if self._closing:
            return
        if returncode != 0:
            frames = self._parser.frames_parsed
            raise SourceError(self.uri, self._exit_reason(child, f"after {frames} frames"))
        if self._parser.buffered:
            logger.warning(
                f"{self.uri}: pipeline ended in the middle of a frame "
                f"({self._parser.buffered} bytes dropped)"
            )
            # A parser without a header holds no bytes and gives no frames: warned once.
            self._parser = Y4mParser(self._parser.layout)

    def _wait_exit(self, child: _Child) -> int:
        """Return code of a child that has closed its stdout (killed if it lingers)."""
        try:
            return child.proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            # It closed its stdout but lives on: the stream is over either way.
            self._terminate(child.proc)
            return child.proc.wait()

    def _exit_reason(self, child: _Child, when: str) -> str:
        returncode = self._wait_exit(child)
        # The child is gone, so its stderr reaches its end at once.
        child.stderr.join(1.0)
        reason = failure_reason(child.stderr.lines)
        if returncode == 0:
            return f"pipeline ended {when}" + (f": {reason}" if reason else "")
        status = _exit_text(returncode)
        return f"pipeline failed {when} ({status})" + (f": {reason}" if reason else "")

    def _interrupt(self, child: _Child) -> None:
        """Ask the pipeline to stop cleanly: SIGINT, which -e turns into an EOS through it.

        Sources then shut down as they should; nvarguscamerasrc killed in the middle of a
        capture can leave nvargus-daemon unable to open the sensor until it is restarted.
        stdout is drained meanwhile (the frames are not wanted), or a full pipe would hold the
        EOS back. Returns after eos_grace_s at most, whether the child exited or not.
        """
        proc = child.proc
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGINT)
        deadline = time.monotonic() + self.eos_grace_s
        while (remaining := deadline - time.monotonic()) > 0:
            chunk = self._read_chunk(child, remaining)
            if chunk == b"":
                break
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(deadline - time.monotonic(), 0.0))

    def _terminate(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGTERM the child's process group, SIGKILL it after kill_grace_s, and reap the child."""
        if proc.returncode is not None:
            return
        # Not yet reaped, so its pid (= process group id) cannot have been reused.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=self.kill_grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def close(self) -> None:
        with self._state_lock:
            child = self._child
            if child is None or self._closing:
                return
            self._closing = True
        # A blocked read() sees the flag within POLL_S and lets go of the lock; after that
        # only we touch the pipe.
        with self._read_lock:
            # If stdout cannot be read, the signals below end the child all the same.
            with contextlib.suppress(SourceError):
                self._interrupt(child)
            self._terminate(child.proc)
            os.close(child.stdout)
            child.stderr.join(1.0)
            with self._state_lock:
                self._child = None
