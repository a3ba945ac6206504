"""`tools/install-jetson.sh --dry-run` against fake L4T release files, system Pythons and CUDA
toolkits: JetPack 6.2 and 7.2 are installed the JetPack way (system Python, --system-site-packages,
no pip OpenCV or TensorRT, pycuda built against CUDA_ROOT); anything else is refused in one line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tools.jetson_install import has_gstreamer, jetson_requirements, probe
from vehicle_agent.compat import tomllib

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tools" / "install-jetson.sh"
EXIT_UNSUPPORTED = 3

RELEASE_6_2 = (
    "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, "
    "DATE: Wed Jan  8 01:49:37 UTC 2025\n# KERNEL_VARIANT: oot\n"
)
RELEASE_7_2 = (
    "# R39 (release), REVISION: 2.0, GCID: 41000000, BOARD: generic, EABI: aarch64, "
    "DATE: Mon Jun  1 00:00:00 UTC 2026\n"
)
JETPACK_5 = "# R35 (release), REVISION: 6.0, GCID: 35000000, BOARD: t186ref, EABI: aarch64\n"
JETPACK_6_1 = "# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64\n"


def probe_text(
    python: str,
    *,
    cv2: str = "4.11.0 /usr/lib/python3/dist-packages/cv2/__init__.py",
    gstreamer: bool = True,
    tensorrt: str = "10.3.0 /usr/lib/python3.10/dist-packages/tensorrt/__init__.py",
    opencv_dists: str = "",
) -> str:
    lines = [f"python={python}", "executable=/usr/bin/python3", f"cv2={cv2}"]
    if not cv2.startswith("missing"):
        lines.append(f"cv2_gstreamer={'yes' if gstreamer else 'no'}")
    lines += [f"tensorrt={tensorrt}", "pycuda=missing: ModuleNotFoundError", "numpy=1.21.5 x"]
    lines.append(f"opencv_dists={opencv_dists}")
    return "\n".join(lines) + "\n"


@dataclass
class Board:
    """A fake Jetson: release file, system Python (prints a canned probe) and CUDA toolkit."""

    root: Path

    def __post_init__(self) -> None:
        (self.root / "bin").mkdir()
        self.release = self.root / "nv_tegra_release"
        self.python = self.root / "bin" / "python3"
        self.cuda = self.root / "cuda"
        self.dpkg = self.root / "bin" / "dpkg-query"
        self._script(self.dpkg, "exit 1")  # no nvidia-l4t-core package

    @staticmethod
    def _script(path: Path, body: str) -> None:
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)

    def jetpack(self, release: str, probe: str, cuda: str | None) -> Board:
        self.release.write_text(release)
        (self.root / "probe.txt").write_text(probe)
        self._script(self.python, f'cat "{self.root}/probe.txt"')
        if cuda is not None:
            (self.cuda / "bin").mkdir(parents=True)
            (self.cuda / "include").mkdir()
            for header in ("cuda.h", "curand.h"):
                (self.cuda / "include" / header).write_text("/* fake */\n")
            self._script(
                self.cuda / "bin" / "nvcc",
                f'echo "Cuda compilation tools, release {cuda}, V{cuda}.68"',
            )
        return self

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        environment = {
            "PATH": os.environ["PATH"],
            "NV_TEGRA_RELEASE": str(self.release),
            "DPKG_QUERY": str(self.dpkg),
            "SYSTEM_PYTHON": str(self.python),
            "CUDA_ROOT": str(self.cuda),
            "DESTDIR": str(self.root / "stage"),
        } | env
        return subprocess.run(
            ["bash", str(SCRIPT), "--dry-run", *args],
            capture_output=True,
            text=True,
            env=environment,
            check=False,
            timeout=60,
        )


@pytest.fixture
def board(tmp_path: Path) -> Board:
    return Board(tmp_path)


def would_run(out: str) -> list[str]:
    return [line.removeprefix("would run: ") for line in out.splitlines() if "would run:" in line]


def refusal(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == EXIT_UNSUPPORTED, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("install-jetson: ")
    assert not would_run(result.stdout), "refused before doing anything"
    return lines[0]


def test_jetpack_6_2_installs_on_the_system_python_without_pip_opencv_or_tensorrt(
    board: Board,
) -> None:
    result = board.jetpack(RELEASE_6_2, probe_text("3.10.12"), cuda="12.6").run()
    assert result.returncode == 0, result.stderr
    assert "L4T R36.4.3: JetPack 6.2 (system Python 3.10, CUDA 12)" in result.stdout
    assert "OpenCV 4.11.0 with GStreamer, TensorRT 10.3.0" in result.stdout
    assert f"CUDA toolkit 12.6 in {board.cuda}" in result.stdout
    commands = would_run(result.stdout)
    venv = f"{board.root}/stage/opt/vehicle-agent/venv"
    assert f"{board.python} -m venv --system-site-packages {venv}" in commands
    assert f"{venv}/bin/pip install -q --no-deps {ROOT}" in commands
    (pycuda_build,) = [c for c in commands if "-r " in c]
    assert pycuda_build.startswith(f"env CUDA_ROOT={board.cuda} PATH={board.cuda}/bin:")
    assert "'numpy<2'" in pycuda_build
    pip_lines = [c for c in commands if "pip" in c]
    assert not [c for c in pip_lines if "opencv" in c or "tensorrt" in c or "[jetson]" in c]
    assert "without opencv-* and tensorrt" in result.stdout
    assert "sees the system cv2 (with GStreamer)" in result.stdout
    assert "dry run: nothing was changed" in result.stdout
    assert not (board.root / "stage").exists()


def test_jetpack_7_2_uses_python_3_12_and_cuda_13(board: Board) -> None:
    result = board.jetpack(RELEASE_7_2, probe_text("3.12.3"), cuda="13.2").run()
    assert result.returncode == 0, result.stderr
    assert "L4T R39.2.0: JetPack 7.2 (system Python 3.12, CUDA 13)" in result.stdout
    assert f"CUDA toolkit 13.2 in {board.cuda}" in result.stdout
    assert any("--system-site-packages" in c for c in would_run(result.stdout))


def test_the_release_comes_from_dpkg_when_the_release_file_is_absent(board: Board) -> None:
    board.jetpack(RELEASE_6_2, probe_text("3.10.12"), cuda="12.6")
    board.release.unlink()
    board._script(board.dpkg, 'echo "36.4.4-20250616085344"')
    result = board.run()
    assert result.returncode == 0, result.stderr
    assert "L4T R36.4.4: JetPack 6.2" in result.stdout


@pytest.mark.parametrize(
    ("release", "words"),
    [
        (JETPACK_5, "L4T R35.6.0 (JetPack 5, Python 3.8) is not supported"),
        (JETPACK_6_1, "L4T R36.4.0 is JetPack 6.1 or older: not supported"),
        ("# R38 (release), REVISION: 2.0, GCID: 1, BOARD: generic\n", "R38.2.0 (JetPack 7.0/7.1"),
    ],
)
def test_an_unsupported_release_is_refused_naming_it(
    board: Board, release: str, words: str
) -> None:
    line = refusal(board.jetpack(release, probe_text("3.10.12"), cuda="12.6").run())
    assert words in line
    assert "JetPack 6.2" in line
    assert "7.2" in line


def test_a_garbled_release_file_is_refused_naming_the_file(board: Board) -> None:
    line = refusal(board.jetpack("Tegra something\n", probe_text("3.10.12"), cuda="12.6").run())
    assert str(board.release) in line
    assert "no L4T release in 'Tegra something'" in line


def test_a_machine_that_is_no_jetson_is_refused(board: Board) -> None:
    board.jetpack(RELEASE_6_2, probe_text("3.10.12"), cuda="12.6")
    board.release.unlink()
    assert "not a Jetson" in refusal(board.run())


def test_a_python_other_than_the_releases_is_refused(board: Board) -> None:
    line = refusal(board.jetpack(RELEASE_7_2, probe_text("3.10.12"), cuda="13.2").run())
    assert "is Python 3.10.12, but JetPack 7.2 ships 3.12" in line


def test_a_missing_cuda_toolkit_is_refused_saying_pycuda_needs_it(board: Board) -> None:
    line = refusal(board.jetpack(RELEASE_6_2, probe_text("3.10.12"), cuda=None).run())
    assert f"CUDA toolkit missing: no {board.cuda}/bin/nvcc" in line
    assert "pycuda is built against it" in line


def test_a_toolkit_without_curand_is_refused_before_pycuda_is_compiled(board: Board) -> None:
    """Found on the bench: pycuda's build stopped at `curand.h: No such file or directory`."""
    board.jetpack(RELEASE_6_2, probe_text("3.10.12"), cuda="12.6")
    (board.cuda / "include" / "curand.h").unlink()
    line = refusal(board.run())
    assert f"no {board.cuda}/include/curand.h, which the pycuda build needs" in line


def test_an_opencv_without_gstreamer_is_refused(board: Board) -> None:
    line = refusal(
        board.jetpack(RELEASE_6_2, probe_text("3.10.12", gstreamer=False), cuda="12.6").run()
    )
    assert "has no GStreamer" in line
    assert "nvidia-opencv" in line


def test_pip_opencv_on_the_system_python_is_refused(board: Board) -> None:
    text = probe_text("3.10.12", opencv_dists="opencv-python@4.12.0.88")
    line = refusal(board.jetpack(RELEASE_6_2, text, cuda="12.6").run())
    assert "pip's OpenCV (opencv-python@4.12.0.88)" in line


def test_missing_tensorrt_bindings_are_refused(board: Board) -> None:
    text = probe_text(
        "3.10.12", tensorrt="missing: ModuleNotFoundError: No module named 'tensorrt'"
    )
    line = refusal(board.jetpack(RELEASE_6_2, text, cuda="12.6").run())
    assert "no TensorRT for" in line
    assert "python3-libnvinfer" in line


def test_a_cuda_toolkit_of_another_release_is_warned_about(board: Board) -> None:
    result = board.jetpack(RELEASE_6_2, probe_text("3.10.12"), cuda="13.0").run()
    assert result.returncode == 0, result.stderr
    assert "warning:" in result.stdout
    assert "JetPack 6.2 ships CUDA 12" in result.stdout


PYTHON_3_10 = Path.home() / ".pyenv" / "versions" / "3.10.13" / "bin" / "python3"


@pytest.mark.skipif(not PYTHON_3_10.exists(), reason=f"no Python 3.10 at {PYTHON_3_10}")
def test_the_probe_runs_on_a_real_python_3_10(board: Board) -> None:
    """The probe is what the script runs on JetPack 6.2's Python 3.10: a real one here, without
    JetPack's OpenCV, is refused for exactly that."""
    board.jetpack(RELEASE_6_2, "", cuda="12.6")
    line = refusal(board.run(SYSTEM_PYTHON=str(PYTHON_3_10)))
    assert "no OpenCV for" in line
    assert "ModuleNotFoundError" in line


def test_generic_mode_installs_the_project_as_it_is(board: Board) -> None:
    result = board.run("--generic", SYSTEM_PYTHON=sys.executable)
    assert result.returncode == 0, result.stderr
    assert any(c.endswith(f"pip install -q 'numpy<2' {ROOT}") for c in would_run(result.stdout))


def test_unknown_options_are_usage_errors(board: Board) -> None:
    result = board.run("--frobnicate")
    assert result.returncode == 2
    assert "unknown option --frobnicate" in result.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_the_script_passes_shellcheck() -> None:
    result = subprocess.run(
        ["shellcheck", str(SCRIPT)], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stdout


# -- tools/jetson_install.py ------------------------------------------------------------------


def _requires_dist() -> list[str]:
    """pyproject.toml's dependencies as the installed metadata lists them (Requires-Dist)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra, requirements in project["optional-dependencies"].items():
        lines += [f'{r}; extra == "{extra}"' for r in requirements]
    return lines


def test_the_jetson_requirements_leave_out_opencv_and_tensorrt_and_keep_pycuda() -> None:
    requirements = jetson_requirements(_requires_dist(), ["jetson"])
    names = " ".join(requirements)
    assert "opencv" not in names
    assert "tensorrt" not in names
    assert "pycuda>=2024.1" in requirements
    assert "pytest" not in names  # other extras stay out
    assert "torch" not in names
    assert 'tomli>=2.0.1,<3; python_version < "3.11"' in requirements  # markers kept for pip
    assert any(r.startswith("numpy") for r in requirements)


def test_a_marker_it_does_not_understand_is_an_error() -> None:
    with pytest.raises(ValueError, match="only a bare"):
        jetson_requirements(['x>=1; python_version < "3.11" and extra == "jetson"'])


def test_gstreamer_is_read_from_the_build_information() -> None:
    assert has_gstreamer("  Video I/O:\n    GStreamer:                   YES (1.20.3)\n")
    assert not has_gstreamer("    GStreamer:                   NO\n")
    assert not has_gstreamer("    FFMPEG:                      YES\n")


def test_the_probe_of_this_python_names_its_opencv_wheel() -> None:
    lines = dict(line.split("=", 1) for line in probe())
    assert lines["python"].startswith(f"{sys.version_info[0]}.{sys.version_info[1]}.")
    assert lines["cv2_gstreamer"] in {"yes", "no"}
    assert lines["tensorrt"].startswith("missing") or lines["tensorrt"][0].isdigit()
    assert "opencv-" in lines["opencv_dists"]


def test_on_the_real_system_the_config_is_readable_by_the_service_user(board: Board) -> None:
    """The unit runs as User=vehicle-agent: a 0640 config owned by root alone would not start."""
    result = board.jetpack(RELEASE_6_2, probe_text("3.10.12"), cuda="12.6").run(DESTDIR="")
    assert result.returncode == 0, result.stderr
    commands = would_run(result.stdout)
    if Path("/etc/vehicle-agent/vehicle-agent.toml").exists():
        pytest.skip("this machine has an installed config (never overwritten)")
    assert (
        "install -m 0640 -g vehicle-agent systemd/vehicle-agent.toml "
        "/etc/vehicle-agent/vehicle-agent.toml"
    ) in commands
    assert "systemctl enable vehicle-agent.service" in commands


def test_the_installer_runs_the_doctor_as_the_service_user_without_opening_the_mcu(
    board: Board,
) -> None:
    result = board.jetpack(RELEASE_6_2, probe_text("3.10.12"), cuda="12.6").run(DESTDIR="")
    (doctor,) = [c for c in would_run(result.stdout) if " doctor " in c]
    assert doctor.startswith(
        "runuser -u vehicle-agent -- /opt/vehicle-agent/venv/bin/vehicle-agent"
    )
    assert "--no-mcu" in doctor
