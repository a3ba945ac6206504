"""Uplink fixtures: a real Mosquitto (TLS, passwords, per-vehicle ACLs) and the operator's console."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import pytest

from tests.uplink.broker import OPERATOR, Broker, Certs, have_mosquitto
from tests.uplink.helpers import CREDENTIAL
from tools.fleet import BrokerAccess, FleetClient
from tools.loop import Account, LoopBroker
from vehicle_agent.secrets import env_name

PASSWORDS = {"veh-1": "pw-veh-1", "veh-2": "pw-veh-2", "veh-3": "pw-veh-3", OPERATOR: "pw-operator"}


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return Certs.make(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def broker(tmp_path: Path, certs: Certs) -> Iterator[Broker]:
    """A running Mosquitto; stop() and start() it again on the same ports, data kept."""
    if not have_mosquitto():
        pytest.skip("mosquitto not installed (apt-get install mosquitto mosquitto-clients)")
    broker = Broker(tmp_path / "broker", certs, PASSWORDS)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def vehicle_password(monkeypatch: pytest.MonkeyPatch) -> str:
    """`password_credential = "mqtt-password"` resolves to veh-1's password."""
    monkeypatch.setenv(env_name(CREDENTIAL), PASSWORDS["veh-1"])
    return PASSWORDS["veh-1"]


def operator_access(broker: Broker, certs: Certs) -> BrokerAccess:
    return BrokerAccess(broker.url("tls"), certs.ca, OPERATOR, PASSWORDS[OPERATOR])


def loop_access(broker: Broker, certs: Certs, vehicles: Sequence[str]) -> LoopBroker:
    """The test broker as the fleet tools' `LoopBroker` (tools.loop, tools.kill_sweep): TLS,
    the operator's account and each vehicle's."""
    return LoopBroker(
        broker.url("tls"),
        certs.ca,
        Account(OPERATOR, PASSWORDS[OPERATOR]),
        {v: Account(v, PASSWORDS[v]) for v in vehicles},
    )


@pytest.fixture
async def operator(broker: Broker, certs: Certs) -> AsyncIterator[FleetClient]:
    """The fleet console, connected as the operator (may read and write all of fleet/#)."""
    async with FleetClient(operator_access(broker, certs)) as client:
        yield client
