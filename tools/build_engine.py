"""Kept for old scripts: `python -m tools.build_engine ARGS` is `vehicle-agent build-engine ARGS`
(the command ships in the wheel, so it is on the vehicle; see vehicle_agent/enhance/build_engines.py).
"""

from __future__ import annotations

import sys

from vehicle_agent.cli import main as cli_main


def main(argv: list[str] | None = None) -> int:
    return cli_main(["build-engine", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
