"""The test broker itself: distinct listener ports, and a first start that survives a port taken
between picking it and binding it (CI once saw mosquitto refuse to start on a port picked twice)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.uplink.broker import Broker, Certs, free_ports, have_mosquitto
from tests.uplink.conftest import PASSWORDS


def test_ports_picked_together_are_distinct() -> None:
    for _ in range(50):
        ports = free_ports(4)
        assert len(set(ports)) == 4


def test_a_first_start_picks_again_when_a_port_was_taken(tmp_path: Path, certs: Certs) -> None:
    if not have_mosquitto():
        pytest.skip("mosquitto not installed (apt-get install mosquitto mosquitto-clients)")
    broker = Broker(tmp_path / "broker", certs, PASSWORDS)
    taken = broker.ports["tls"]
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        broker.start()
        try:
            assert broker.running
            assert taken not in broker.ports.values()
            ports = dict(broker.ports)
            broker.restart()
            assert broker.ports == ports
        finally:
            broker.stop()


def test_a_restart_keeps_its_ports_and_says_when_one_is_taken(tmp_path: Path, certs: Certs) -> None:
    if not have_mosquitto():
        pytest.skip("mosquitto not installed (apt-get install mosquitto mosquitto-clients)")
    broker = Broker(tmp_path / "broker", certs, PASSWORDS)
    broker.start()
    broker.stop()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", broker.ports["plain"]))
        squatter.listen()
        with pytest.raises(RuntimeError, match="Address already in use"):
            broker.start()
    assert not broker.running
