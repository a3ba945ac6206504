"""Capture: frame sources chosen by URI, and the stage that stamps, paces and reconnects them."""
