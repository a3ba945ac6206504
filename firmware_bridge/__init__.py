"""firmware_bridge: the host side of the camera module microcontroller's serial protocol.

Usable on its own: it never imports `vehicle_agent`. The protocol, the asyncio bridge and the
firmware simulator land with the firmware-bridge issue; until then the daemon runs its fan
through the simulated driver chosen in `vehicle_agent.app`.
"""
