"""The vehicle's runtime dependencies are what the packages import: aiomqtt is for the fleet
tools only (the `fleet` extra), and every vehicle_agent module imports without it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from vehicle_agent.compat import tomllib

ROOT = Path(__file__).resolve().parent.parent

IMPORT_ALL = """
import importlib, json, pkgutil, sys
sys.modules["aiomqtt"] = None  # not installed
import vehicle_agent, firmware_bridge
failed = {}
for package in (vehicle_agent, firmware_bridge):
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if module.name.endswith("__main__"):
            continue
        try:
            importlib.import_module(module.name)
        except ImportError as exc:
            failed[module.name] = str(exc)
print(json.dumps(failed))
"""


def _requirement_names(requirements: list[str]) -> set[str]:
    return {r.split(";")[0].split(">")[0].split("=")[0].split("<")[0].strip() for r in requirements}


def test_aiomqtt_is_in_the_fleet_extra_not_the_vehicles_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "aiomqtt" not in _requirement_names(project["dependencies"])
    assert "paho-mqtt" in _requirement_names(project["dependencies"])
    extras = project["optional-dependencies"]
    assert "aiomqtt" in _requirement_names(extras["fleet"])
    assert "aiomqtt" in _requirement_names(extras["dev"])  # tests drive the fleet tools


def test_every_package_module_imports_without_aiomqtt() -> None:
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    failed = json.loads(result.stdout.strip().splitlines()[-1])
    # Only the optional TensorRT backends, which need the jetson extra.
    assert all("tensorrt" in reason for reason in failed.values()), failed
    assert not any("aiomqtt" in reason for reason in failed.values())
