"""One broker-URL parser and one pydantic error describer for the config, the commands, the
update manifests and the fleet tools."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from tools.fleet import BrokerAccess
from vehicle_agent.validation import BrokerAddress, describe_validation, parse_broker_url


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("mqtt://broker", BrokerAddress(tls=False, host="broker", port=1883)),
        (
            "mqtts://broker.fleet.example:8884/",
            BrokerAddress(tls=True, host="broker.fleet.example", port=8884),
        ),
        ("mqtt://10.0.0.7:1884", BrokerAddress(tls=False, host="10.0.0.7", port=1884)),
        ("mqtts://[fd00::1]", BrokerAddress(tls=True, host="fd00::1", port=8883)),
    ],
)
def test_broker_urls_parse_to_an_address(url: str, address: BrokerAddress) -> None:
    assert parse_broker_url(url) == address


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://broker", "does not match the pattern mqtts://HOST[:PORT]"),
        ("mqtt://", "does not match the pattern"),
        ("mqtt://h:0", "port out of range 1–65535"),
        ("mqtt://h:70000", "port out of range 1–65535"),
    ],
)
def test_a_bad_broker_url_is_a_plain_sentence(url: str, words: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_broker_url(url)
    assert words in str(caught.value)
    assert "[A-Za-z" not in str(caught.value)  # never the regular expression


def test_the_fleet_tools_use_the_same_parser() -> None:
    assert BrokerAccess("mqtt://[::1]:1999").address()[:2] == ("::1", 1999)
    with pytest.raises(ValueError, match="broker URL 'http://x': does not match the pattern"):
        BrokerAccess("http://x").address()


class Inner(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    port: int


class Outer(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    inner: list[Inner]


def test_the_first_problem_names_its_key_the_value_and_how_many_more() -> None:
    with pytest.raises(ValidationError) as caught:
        Outer.model_validate({"inner": [{"port": "30"}, {"port": 1, "x": 2}]})
    text = describe_validation(caught.value, prefix="manifest.")
    assert (
        text
        == "manifest.inner[0].port: Input should be a valid integer (got '30') (and 1 more error)"
    )
    with pytest.raises(ValidationError) as caught:
        Outer.model_validate({"inner": [], "extra": 1})
    assert describe_validation(caught.value) == "extra: unknown key"
