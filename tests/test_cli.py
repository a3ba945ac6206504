"""The command line: --version, offline enhancement of images, folders and videos, clear errors,
global options after the command, --json, the default config, help and progress conventions."""

from __future__ import annotations

import json
import os
import pty
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from vehicle_agent import __version__
from vehicle_agent.cli import DEFAULT_CONFIG, build_parser, main
from vehicle_agent.config import Config
from vehicle_agent.enhance.store import ModelStore, default_dirs


def dark_image(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(5, 60, (60, 80, 3), dtype=np.uint8)


def test_version_from_the_module_entry_point() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "vehicle_agent", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == f"vehicle-agent {__version__}"


def test_enhance_one_image(tmp_path: Path) -> None:
    src = tmp_path / "night.png"
    cv2.imwrite(str(src), dark_image())
    out = tmp_path / "night_enhanced.png"
    assert main(["enhance", str(src), "--out", str(out)]) == 0
    enhanced = cv2.imread(str(out))
    assert enhanced is not None
    assert enhanced.shape == (60, 80, 3)
    assert enhanced.mean() > dark_image().mean()


def test_enhance_a_folder_keeps_names_and_reports_a_corrupt_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        cv2.imwrite(str(src / f"frame_{i}.jpg"), dark_image(i))
    (src / "broken.jpg").write_bytes(b"not a jpeg")
    (src / "notes.txt").write_text("ignored")
    out = tmp_path / "out"
    assert main(["enhance", str(src), "--out", str(out)]) == 1
    assert sorted(p.name for p in out.iterdir()) == ["frame_0.jpg", "frame_1.jpg", "frame_2.jpg"]
    captured = capsys.readouterr()
    assert "broken.jpg: cannot decode image" in captured.err
    assert "enhanced 3 frame(s)" in captured.out


def test_enhance_a_video_gives_a_video_with_every_frame(tmp_path: Path) -> None:
    src = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(src), cv2.VideoWriter.fourcc(*"MJPG"), 15, (80, 60))
    for i in range(12):
        writer.write(dark_image(i))
    writer.release()
    out = tmp_path / "clip_out.mp4"
    assert main(["enhance", str(src), "--out", str(out), "--backend", "passthrough"]) == 0
    cap = cv2.VideoCapture(str(out))
    assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == 12
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(15)


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("missing.png", None, "no such file or directory"),
        ("notes.txt", b"hello", "not an image"),
        ("corrupt.png", b"\x89PNG garbage", "cannot decode image"),
    ],
)
def test_enhance_errors_are_one_line_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, content: bytes | None, words: str
) -> None:
    src = tmp_path / name
    if content is not None:
        src.write_bytes(content)
    assert main(["enhance", str(src), "--out", str(tmp_path / "out.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert name in err[0]
    assert words in err[0]


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("vehicle-agent: ")
    return err[0]


def test_enhance_into_a_missing_folder_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in.png"
    cv2.imwrite(str(src), dark_image())
    out = tmp_path / "missing" / "dir" / "x.jpg"
    assert main(["enhance", str(src), "--out", str(out)]) == 2
    assert f"no such folder {out.parent}" in _one_error_line(capsys)
    assert not (tmp_path / "missing").exists()


def test_enhance_refuses_to_overwrite_its_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in.png"
    cv2.imwrite(str(src), dark_image())
    before = src.read_bytes()
    for out in (src, tmp_path):  # the file itself, or the folder it is in
        assert main(["enhance", str(src), "--out", str(out)]) == 2
        assert "refusing to overwrite it" in _one_error_line(capsys)
        assert src.read_bytes() == before


def _png_header(path: Path, width: int, height: int) -> Path:
    """A PNG that announces width × height, with one row of pixels: decoding it fails, reading
    its header does not."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(bytes(1 + 3 * width))
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    return path


@pytest.mark.parametrize(
    ("width", "height"), [(20_000, 20_000), (8_193, 10), (7_500, 7_500), (10, 9_000)]
)
def test_enhance_refuses_pictures_above_the_size_limit_before_decoding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], width: int, height: int
) -> None:
    src = _png_header(tmp_path / "huge.png", width, height)
    assert main(["enhance", str(src), "--out", str(tmp_path / "out.png")]) == 2
    line = _one_error_line(capsys)
    assert "is too large to enhance (at most 8192 px on a side and 50 megapixels)" in line
    if width * height < 100_000_000:  # above, Pillow refuses to tell the size
        assert f"{width}×{height}" in line


def test_enhance_takes_a_picture_at_the_size_limit(tmp_path: Path) -> None:
    src = tmp_path / "wide.png"
    cv2.imwrite(str(src), np.full((4, 8192, 3), 40, np.uint8))
    out = tmp_path / "out.png"
    assert main(["enhance", str(src), "--out", str(out), "--backend", "passthrough"]) == 0
    written = cv2.imread(str(out))
    assert written is not None
    assert written.shape == (4, 8192, 3)


def test_simulate_refuses_a_still_image_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = tmp_path / "photo.jpg"
    cv2.imwrite(str(photo), dark_image())
    report = tmp_path / "report"
    assert main(["simulate", "--video", str(photo), "--report", str(report)]) == 2
    assert "a still image, not a video" in _one_error_line(capsys)
    assert not report.exists()


def test_simulate_of_a_video_without_a_frame_fails_saying_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"not a video")
    config = tmp_path / "bench.toml"
    config.write_text("[capture.reconnect]\nmax_attempts = 1\ninitial_s = 0.01\nmax_s = 0.02\n")
    report = tmp_path / "r"
    args = ["simulate", "--config", str(config), "--video", str(clip), "--report", str(report)]
    assert main(args) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == f"vehicle-agent: error: --video {clip}: no frame was read; see {report}"


def test_simulate_with_a_bad_broker_url_is_a_plain_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["simulate", "--broker", "http://localhost", "--report", str(tmp_path / "r")]
    assert main(args) == 2
    line = _one_error_line(capsys)
    assert "--broker: " in line
    assert "mqtts://HOST[:PORT] or mqtt://HOST[:PORT]" in line
    assert "^" not in line  # no regular expression


# -- conventions: global options, defaults, --json, help, progress ---------------------------


def test_global_options_are_accepted_before_or_after_the_command(tmp_path: Path) -> None:
    parser = build_parser()
    config = tmp_path / "a.toml"
    for argv in (
        ["--log-level", "debug", "--log-format", "json", "--config", str(config), "run"],
        ["run", "--log-level", "debug", "--log-format", "json", "--config", str(config)],
        ["--log-level", "debug", "run", "--log-format", "json", "--config", str(config)],
    ):
        args = parser.parse_args(argv)
        assert (args.log_level, args.log_format, args.config) == ("DEBUG", "json", config), argv
    for command in ("simulate", "status", "check-config", "safe-state", "enhance"):
        extra = ["in.png", "--out", "o.png"] if command == "enhance" else []
        args = parser.parse_args([command, *extra, "--log-level", "warning", "--config", "c"])
        assert (args.log_level, args.config) == ("WARNING", Path("c")), command
    # An option given before the command is not undone by the command's defaults.
    args = parser.parse_args(["--config", str(config), "enhance", "in.png", "--out", "o.png"])
    assert args.config == config


def test_check_config_takes_its_file_from_the_global_config_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "a.toml"
    config.write_text('[agent]\nvehicle_id = "veh-9"\n')
    assert main(["--config", str(config), "check-config", "--log-level", "error"]) == 0
    assert capsys.readouterr().out.startswith(f"{config}: OK (config digest ")


def test_run_and_safe_state_default_to_the_units_config(capsys: pytest.CaptureFixture[str]) -> None:
    if DEFAULT_CONFIG.exists():
        pytest.skip(f"{DEFAULT_CONFIG} exists on this machine")
    for command in ("run", "safe-state", "check-config"):
        assert main([command]) == 2
        line = _one_error_line(capsys)
        assert line == f"vehicle-agent: config error: {DEFAULT_CONFIG}: no such file", command


def test_check_config_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.toml"
    good.write_text("[uplink]\ntype = 'none'\n")
    assert main(["check-config", str(good), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is True
    assert data["file"] == str(good)
    assert len(data["digest"]) == 12
    bad = tmp_path / "bad.toml"
    bad.write_text('[uplink]\ntype = "mqtt"\nbroker = "mqtt://localhost"\nkeepalive_s = "30"\n')
    assert main(["check-config", "--json", str(bad)]) == 2
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert data["ok"] is False
    assert data["file"] == str(bad)
    assert "uplink.keepalive_s" in data["error"]
    assert captured.err.strip() == f"vehicle-agent: config error: {data['error']}"


def test_enhance_help_lists_the_installed_models(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["enhance", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    listed = out.split("installed models (--model NAME):\n", 1)[1]
    store = ModelStore(default_dirs(Config().agent.state_dir))
    assert store.names()  # the shipped ones
    for name in store.names():
        _, manifest = store.find(name)
        assert re.search(
            rf"^  {re.escape(name)} +{re.escape(manifest.version)} ", listed, re.MULTILINE
        )


def _clip(path: Path, frames: int) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 15, (80, 60))
    for i in range(frames):
        writer.write(dark_image(i))
    writer.release()
    return path


def test_enhance_of_a_video_shows_a_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    clip = _clip(tmp_path / "clip.avi", 12)
    out = tmp_path / "out.mp4"
    primary, secondary = pty.openpty()
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "120"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "vehicle_agent", "enhance", str(clip)),
            *("--out", str(out), "--backend", "passthrough"),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=secondary,
        env=env,
    )
    os.close(secondary)
    seen = b""
    while True:
        try:
            chunk = os.read(primary, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    stdout, _ = proc.communicate(timeout=60)
    os.close(primary)
    assert proc.returncode == 0, seen.decode(errors="replace")
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", seen.decode(errors="replace"))
    assert "enhancing clip.avi" in text
    assert "12/12" in text
    assert b"enhanced 12 frame(s)" in stdout


def test_enhance_of_a_video_off_a_terminal_shows_no_bar(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = _clip(tmp_path / "clip.avi", 5)
    assert (
        main(["enhance", str(clip), "--out", str(tmp_path / "o.mp4"), "--backend", "passthrough"])
        == 0
    )
    assert "enhancing" not in capsys.readouterr().err


def test_tools_gan_without_the_train_extra_says_which_to_install(tmp_path: Path) -> None:
    # A torch that is not installed: a package on the path ahead of site-packages that fails.
    hidden = tmp_path / "no-train"
    (hidden / "torch").mkdir(parents=True)
    (hidden / "torch" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'torch'\", name='torch')\n"
    )
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hidden), str(root)])}
    for argv in (["train", "--out", str(tmp_path / "out")], ["--help"]):
        result = subprocess.run(
            [sys.executable, "-m", "tools.gan", *argv],
            capture_output=True,
            text=True,
            env=env,
            cwd=root,
            check=False,
        )
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines() == [
            (
                "python -m tools.gan: needs the train extra (torch is not installed): "
                "pip install -e '.[train]' (torch 2.13.0 CPU build, onnx, scikit-image), or "
                "VEHICLE_AGENT_EXTRAS=dev,train bash tools/setup.sh"
            )
        ]
