"""Developer tool (CI): check systemd/vehicle-agent.service with systemd-analyze.

    python -m tools.check_unit

`systemd-analyze verify` exits 0 on typos and only prints warnings, so any output fails the
check. The unit's ExecStart points at /opt/vehicle-agent (where tools/install-jetson.sh puts the
venv); here it is pointed at this checkout's .venv so verify can check the binary exists.
Prints the `systemd-analyze security --offline=true` exposure score (lower is better) and fails
when it rises above `MAX_EXPOSURE`, and checks what a Jetson needs from the unit (`unit_problems`):
camera access through nvargus-daemon's /tmp/argus_socket, the Orin GPU device nodes, and an
`ExecStopPost=` that puts the fan in its safe state.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "vehicle-agent.service"
INSTALLED = "/opt/vehicle-agent/venv/bin/vehicle-agent"
MAX_EXPOSURE = 1.7
"""The exposure score the unit had before issue 22 (systemd 252); it may only go down."""
SAFE_STATE = f"{INSTALLED} safe-state --config "
ARGUS_SOCKET = "/tmp/argus_socket"  # noqa: S108 - nvargus-daemon's path, not ours
ORIN_DEVICES = ("/dev/nvmap", "/dev/nvgpu/igpu0/ctrl", "/dev/nvgpu/igpu0/as", "/dev/nvhost-ctrl")
"""Device nodes CUDA and nvvidconv open on Orin; each needs a DeviceAllow= line."""


def _settings(text: str, key: str) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(rf"^{key}=(.*)$", text, re.MULTILINE)]


def unit_problems(text: str) -> list[str]:
    """What the unit lacks for a Jetson vehicle (empty: nothing)."""
    problems: list[str] = []
    private_tmp = _settings(text, "PrivateTmp")
    bound = " ".join(_settings(text, "BindPaths") + _settings(text, "BindReadOnlyPaths"))
    if (
        private_tmp
        and private_tmp[-1].lower() in {"yes", "true", "1", "on"}
        and (ARGUS_SOCKET not in bound)
    ):
        problems.append(
            f"PrivateTmp=yes hides {ARGUS_SOCKET} (nvargus-daemon): drop it or bind the socket"
        )
    allowed = {value.split()[0] for value in _settings(text, "DeviceAllow") if value}
    missing = [node for node in ORIN_DEVICES if node not in allowed]
    if missing:
        problems.append(f"DeviceAllow= lacks the Orin device node(s) {', '.join(missing)}")
    if not any(value.startswith(SAFE_STATE) for value in _settings(text, "ExecStopPost")):
        problems.append(f"no ExecStopPost={SAFE_STATE}FILE (fan to its safe state after a crash)")
    return problems


def exposure(security_output: str) -> float | None:
    """The number in `systemd-analyze security`'s 'Overall exposure level' line."""
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", security_output)
    return float(match.group(1)) if match else None


def main() -> int:
    if shutil.which("systemd-analyze") is None:
        print("check_unit: systemd-analyze not found (Debian package 'systemd')", file=sys.stderr)
        return 1
    local = ROOT / ".venv" / "bin" / "vehicle-agent"
    if not local.exists():
        print(f"check_unit: {local} missing: run tools/setup.sh first", file=sys.stderr)
        return 1
    text = UNIT.read_text(encoding="utf-8")
    if INSTALLED not in text:
        print(f"check_unit: {UNIT} no longer starts {INSTALLED}", file=sys.stderr)
        return 1
    problems = unit_problems(text)
    if problems:
        print(f"check_unit: {UNIT.name}: " + "; ".join(problems), file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        unit = Path(tmp) / UNIT.name
        unit.write_text(text.replace(INSTALLED, str(local)), encoding="utf-8")
        verify = subprocess.run(
            ["systemd-analyze", "verify", str(unit)],
            capture_output=True,
            text=True,
            check=False,
            cwd=tmp,
        )
        printed = (verify.stdout + verify.stderr).strip()
        if verify.returncode or printed:
            print(f"check_unit: systemd-analyze verify {UNIT.name}:\n{printed}", file=sys.stderr)
            return 1
        security = subprocess.run(
            ["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
            capture_output=True,
            text=True,
            check=False,
            cwd=tmp,
        )
    score = exposure(security.stdout)
    if score is None:
        print("check_unit: no exposure level in systemd-analyze security's output", file=sys.stderr)
        return 1
    if score > MAX_EXPOSURE:
        print(
            f"check_unit: exposure {score} is above {MAX_EXPOSURE}: the unit got less confined",
            file=sys.stderr,
        )
        return 1
    print(f"check_unit: verify clean; exposure {score} (at most {MAX_EXPOSURE})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
