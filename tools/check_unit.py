"""Developer tool (CI): check systemd/vehicle-agent.service with systemd-analyze.

    python -m tools.check_unit

`systemd-analyze verify` exits 0 on typos and only prints warnings, so any output fails the
check. The unit's ExecStart points at /opt/vehicle-agent (where tools/install-jetson.sh puts the
venv); here it is pointed at this checkout's .venv so verify can check the binary exists.
Prints the `systemd-analyze security --offline=true` exposure score (lower is better).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "vehicle-agent.service"
INSTALLED = "/opt/vehicle-agent/venv/bin/vehicle-agent"


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
    score = [line for line in security.stdout.splitlines() if "Overall exposure level" in line]
    print(f"check_unit: verify clean; {score[0].strip() if score else 'no security score'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
