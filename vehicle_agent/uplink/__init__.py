"""Uplink, fifth stage of the flow: the link to the fleet backend."""
