"""The bench report: plots, `report.html` and the annotated side-by-side video of a run."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
import threading
from html.parser import HTMLParser
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from rich.console import Console

from tests.test_simulate import cut_clip, video_frames
from vehicle_agent.cli import main
from vehicle_agent.records import Event, Frame, FrameRecord
from vehicle_agent.sim.lockstep import Lockstep
from vehicle_agent.sim.overlay import PROBE_COLUMNS, draw_tile_mask
from vehicle_agent.sim.progress import ProgressSink
from vehicle_agent.sim.report import (
    PLOTS,
    BenchRun,
    ReportError,
    label,
    show,
    verdict,
    write_report,
)
from vehicle_agent.sim.simulate import without_wall_clock

SOURCE_WIDTH = 768


class PageParser(HTMLParser):
    """Collects what the page refers to, and checks that every opened tag is closed."""

    VOID = frozenset({"meta", "img", "br", "hr", "link", "input", "source"})

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.videos: list[str] = []
        self.links: list[str] = []
        self.open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "img":
            self.images.append(values.get("src") or "")
        elif tag == "video":
            self.videos.append(values.get("src") or "")
        elif tag == "a":
            self.links.append(values.get("href") or "")
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.open, f"</{tag}> closes nothing"
        assert self.open.pop() == tag, f"</{tag}> closes another tag"


def seeded_run(clip: Path, out: Path) -> list[str]:
    return [
        *("simulate", "--video", str(clip), "--report", str(out)),
        *("--inject", "drops@1s", "--speed", "max", "--seed", "3"),
    ]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One seeded 3 s run with drops put on the lens at 1 s."""
    tmp = tmp_path_factory.mktemp("report")
    out = tmp / "report"
    assert main(seeded_run(cut_clip(tmp / "clip.mp4", 3), out)) == 0
    return out


def test_run_writes_every_plot_as_a_png(report: Path) -> None:
    for name in PLOTS:
        image = cv2.imread(str(report / f"{name}.png"))
        assert image is not None, name
        assert image.shape[0] > 100
        assert image.shape[1] > 100


def test_report_html_is_offline_and_refers_to_plots_and_video(report: Path) -> None:
    page = report / "report.html"
    parser = PageParser()
    parser.feed(page.read_text(encoding="utf-8"))
    parser.close()
    assert parser.open == []
    embedded = [src for src in parser.images if src.startswith("data:image/png;base64,")]
    assert len(embedded) == len(PLOTS)
    assert parser.videos == ["side_by_side.mp4"]
    for src in [*parser.videos, *parser.links, *parser.images]:
        assert "://" not in src  # nothing from the network
        if not src.startswith("data:"):
            assert (report / src).is_file(), src
    summary = json.loads((report / "summary.json").read_text())
    assert summary["outputs"]["report"] == str(page)
    assert summary["outputs"]["side_by_side"] == str(report / "side_by_side.mp4")


def test_side_by_side_video_is_raw_and_enhanced_at_source_size(report: Path) -> None:
    video = report / "side_by_side.mp4"
    capture = cv2.VideoCapture(str(video))
    ok, frame = capture.read()
    capture.release()
    assert ok
    assert frame.shape[1] == 2 * SOURCE_WIDTH
    assert video_frames(video) == 30
    with av.open(str(video)) as container:
        assert container.streams.video[0].codec_context.name == "h264"


def test_the_page_starts_with_a_verdict_and_shows_readable_tables(report: Path) -> None:
    page = (report / "report.html").read_text(encoding="utf-8")
    verdict = re.search(r'<p class="verdict" id="verdict">([^<]*)</p>', page)
    assert verdict is not None
    assert verdict.group(1).startswith("drops at 1.0 s, ")
    assert verdict.group(1).endswith("; 0 frames dropped")
    assert page.index('id="verdict"') < page.index("<h2>Summary</h2>")
    cells = re.findall(r"<t[dh]>([^<]*)</t[dh]>", page)
    keys = re.findall(r"<th>([^<]*)</th>", page) + re.findall(r"<tr><td>([^<]*)</td>", page)
    assert "Frames dropped" in keys
    assert "Stopped because" in keys
    assert not [k for k in keys if "_" in k]  # no snake_case keys
    assert "end of stream" in cells
    assert not [c for c in cells if re.search(r"\d\.\d{4,}", c)]  # no float noise
    assert not [c for c in cells if c.lstrip().startswith(("{", "["))]  # no raw JSON


CHECK_PAGE = """<!DOCTYPE html><html><body><video id="v" muted autoplay src="{src}"></video>
<pre id="out">waiting</pre><script>
const v = document.getElementById("v"), out = document.getElementById("out");
v.addEventListener("error", () => {{ out.textContent = "error " + (v.error && v.error.code); }});
v.addEventListener("timeupdate", () => {{
  if (v.currentTime > 1) out.textContent = "playing " + v.videoWidth + "x" + v.videoHeight;
}});
</script></body></html>
"""


@pytest.mark.skipif(shutil.which("chromium") is None, reason="no chromium on this machine")
def test_the_video_on_the_page_plays_in_headless_chromium(report: Path) -> None:
    parser = PageParser()
    parser.feed((report / "report.html").read_text(encoding="utf-8"))
    (src,) = parser.videos
    check = report / "play-check.html"
    check.write_text(CHECK_PAGE.format(src=src), encoding="utf-8")
    try:
        dom = subprocess.run(
            [
                "chromium", "--headless=new", "--no-sandbox", "--disable-gpu",
                "--autoplay-policy=no-user-gesture-required", "--virtual-time-budget=10000",
                "--dump-dom", check.as_uri(),
            ],
            capture_output=True, text=True, timeout=120, check=True,
        ).stdout  # fmt: skip
    finally:
        check.unlink()
    assert f'<pre id="out">playing {2 * SOURCE_WIDTH}x576</pre>' in dom


def test_frames_csv_carries_the_module_temperatures(report: Path) -> None:
    with (report / "frames.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert set(PROBE_COLUMNS) <= rows[0].keys()
    assert any(row["sensor_c"] and 0 < float(row["sensor_c"]) < 100 for row in rows)
    assert {row["cleaning_state"] for row in rows} >= {"idle"}


def test_report_names_the_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ReportError) as caught:
        write_report(tmp_path)
    assert caught.value.path.name == "summary.json"


def test_tile_mask_shades_only_soiled_tiles() -> None:
    image = np.full((40, 80, 3), 128, np.uint8)
    mask = np.zeros((4, 8), bool)
    mask[1, 2] = True  # tiles of 10 px: rows 10–19, columns 20–29
    out = draw_tile_mask(image, mask)
    assert out[15, 25, 2] > 150  # red rises inside the tile
    assert out[15, 25, 0] < 128
    assert (out[30:, :] == 128).all()  # elsewhere untouched
    assert (image == 128).all()  # the frame itself is not drawn on


def test_progress_bar_counts_frames_with_rate_and_time_left() -> None:
    out = io.StringIO()
    sink = ProgressSink(4, "clip.mp4", Console(file=out, force_terminal=True, width=120))
    image = np.zeros((8, 8, 3), np.uint8)
    for seq in range(3):
        sink.write(FrameRecord(Frame(seq, float(seq), seq / 10, image, "test://")))
    sink.close()
    text = out.getvalue()
    assert "clip.mp4" in text
    assert "3/4" in text
    assert "fps" in text
    assert "left" in text


def test_progress_bar_stays_off_screen_until_the_first_frame() -> None:
    out = io.StringIO()
    ProgressSink(None, "clip.mp4", Console(file=out, force_terminal=True)).close()
    assert out.getvalue() == ""


def test_two_seeded_runs_write_the_same_events_and_adhesion(report: Path, tmp_path: Path) -> None:
    """Host timings are null, the digest does not name the report directory, and the lens is
    read in lockstep with the act stage, so what the daemon saw does not depend on the host."""
    again = tmp_path / "again"
    assert main(seeded_run(report.parent / "clip.mp4", again)) == 0
    events = (report / "events.jsonl").read_text()
    assert (again / "events.jsonl").read_text() == events
    loaded = next(json.loads(line) for line in events.splitlines() if "model_loaded" in line)
    assert loaded["load_s"] is None
    assert loaded["warmup_ms"] is None

    def adhesion(directory: Path) -> list[tuple[str, str]]:
        with (directory / "frames.csv").open() as f:
            return [(r["adhesion_score"], r["adhesion_covered"]) for r in csv.DictReader(f)]

    assert adhesion(again) == adhesion(report)
    assert json.loads((again / "summary.json").read_text())["seed"] == 3


def test_lockstep_reads_a_frame_only_after_the_act_stage_finished_the_last() -> None:
    lockstep = Lockstep(wait_limit_s=5.0)
    record = FrameRecord(Frame(0, 0.0, 0.0, np.zeros((8, 8, 3), np.uint8), "test://"))
    lockstep.turn()  # frame 0: nothing to wait for
    second = threading.Thread(target=lockstep.turn)
    second.start()
    second.join(0.2)
    assert second.is_alive()  # frame 1 waits for frame 0 to be acted on
    lockstep(record)
    second.join(2.0)
    assert not second.is_alive()
    assert lockstep.timeouts == 0


def test_lockstep_does_not_wait_for_a_frame_that_never_came() -> None:
    lockstep = Lockstep(wait_limit_s=0.05)
    lockstep.turn()
    lockstep.skip()  # the read returned nothing (end of the recording)
    lockstep.turn()
    assert lockstep.timeouts == 0
    lockstep.turn()  # frame 1 was read but never acted on: the wait is bounded
    assert lockstep.timeouts == 1


def test_seeded_event_log_nulls_host_timings_only() -> None:
    seen: list[Event] = []
    log = without_wall_clock(seen.append)
    log(Event("model_loaded", 0.0, 0, {"model": "m@1", "load_s": 0.2, "warmup_ms": 4.1}))
    log(Event("cleaning_finished", 9.0, 90, {"duration_s": 5.0}))
    assert dict(seen[0].data) == {"model": "m@1", "load_s": None, "warmup_ms": None}
    assert dict(seen[1].data) == {"duration_s": 5.0}


def test_negative_seed_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", "--report", str(tmp_path), "--seed", "-1"]) == 2
    assert "--seed -1" in capsys.readouterr().err


def test_the_verdict_tells_the_soiling_story_in_one_line(tmp_path: Path) -> None:
    events: list[dict[str, object]] = [
        {"t": 0.0, "type": "pipeline_started"},
        {"t": 10.5, "type": "adhesion_detected"},
        {"t": 10.5, "type": "cleaning_started"},
        {"t": 13.5, "type": "cleaning_verifying"},
        {"t": 14.9, "type": "adhesion_cleared"},
    ]
    injected = [{"kind": "drops", "start_s": 10.0, "appeared_s": 10.0, "gone_s": 13.6}]
    run = BenchRun(tmp_path, {"injected": injected, "frames_dropped": 0}, events)
    assert (
        verdict(run)
        == "drops at 10.0 s, detected after 0.5 s, cleaned, cleared at 14.9 s; 0 frames dropped"
    )
    missed = BenchRun(tmp_path, {"injected": injected, "frames_dropped": 2}, events[:1])
    assert verdict(missed) == "drops at 10.0 s, not detected; 2 frames dropped"
    quiet = BenchRun(tmp_path, {"frames_dropped": 1, "stop_reason": "signal"}, [])
    assert verdict(quiet) == "no soiling injected; 1 frame dropped; stopped: signal"


@pytest.mark.parametrize(
    ("key", "text"),
    [
        ("frames_dropped", "Frames dropped"),
        ("blown_s", "Blown (s)"),
        ("max_temperatures_c", "Max temperatures (°C)"),
        ("capture->enhance", "Capture → enhance"),
    ],
)
def test_labels_read_as_words(key: str, text: str) -> None:
    assert label(key) == text


def test_numbers_lose_their_float_noise() -> None:
    assert show(14.600000000000001) == "14.6"
    assert show(0.05691) == "0.057"
    assert show(1234.567) == "1234.6"
    assert show({"sensor": 31.7, "hot_side": 26.314}) == "sensor: 31.7, hot side: 26.314"
    assert show(None) == "–"
    assert show(value=True) == "yes"
