"""vehicle-agent: the camera controller daemon (capture → enhance → analyze → act → uplink)."""

__version__ = "0.1.0"
