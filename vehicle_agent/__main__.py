"""`python -m vehicle_agent`: the same entry point as the `vehicle-agent` command."""

from vehicle_agent.cli import main

raise SystemExit(main())
