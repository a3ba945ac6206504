"""The import rules of pyproject.toml (`lint-imports`, run by tools/test.sh) hold, and they bite:
a scratch module with a forbidden import, in a copy of the packages, breaks its contract."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT.exists(), reason="import-linter (the dev extra) missing")


def lint(where: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT), "--config", str(where / "pyproject.toml"), "--no-cache"],
        cwd=where,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_import_rules_hold() -> None:
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        (
            "firmware_bridge/_scratch.py",
            "import vehicle_agent.config",
            "firmware_bridge stands alone",
        ),
        ("vehicle_agent/control/_scratch.py", "import vehicle_agent.app", "stages never import"),
        ("vehicle_agent/_scratch.py", "import tools.fleet", "the daemon never imports"),
        (
            "vehicle_agent/uplink/_scratch.py",
            "import vehicle_agent.update.updater",
            "the fleet link never imports the model updates",
        ),
        # The bus importing a package's events again, as it once did (the hub).
        (
            "vehicle_agent/events.py",
            "import vehicle_agent.control.events",
            "events import no stage",
        ),
    ],
)
def test_a_forbidden_import_breaks_its_contract(
    tmp_path: Path, module: str, line: str, contract: str
) -> None:
    for package in ("vehicle_agent", "firmware_bridge", "tools"):
        shutil.copytree(
            ROOT / package,
            tmp_path / package,
            symlinks=True,
            ignore=shutil.ignore_patterns("__pycache__", "*.onnx", "*.mp4", "samples"),
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / module).write_text(f'"""A deliberately wrong import."""\n\n{line}\n')
    result = lint(tmp_path)
    assert result.returncode != 0, result.stdout[-3000:]
    broken = [x for x in result.stdout.splitlines() if x.endswith("BROKEN")]
    assert len(broken) == 1
    assert broken[0].startswith(contract)
