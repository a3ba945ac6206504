"""Tests of the firmware bridge: protocol, simulated firmware, bridge over a real pty, CLI, docs."""
