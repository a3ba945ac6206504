"""Firmware bridge: `python -m firmware_bridge`, the command line (see `cli.py`)."""

from firmware_bridge.cli import main

raise SystemExit(main())
