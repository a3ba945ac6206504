"""The Python 3.10 shims (vehicle_agent/compat.py, firmware_bridge/compat.py) behave as the
3.11 standard library does, on whichever Python runs the tests; both copies of a shim pass the
same assertions."""

from __future__ import annotations

import asyncio
import enum
import json
import struct
import sys
from datetime import datetime, timezone
from types import ModuleType

import pytest
from pydantic import BaseModel

import firmware_bridge.compat
from firmware_bridge import McuTimeoutError
from firmware_bridge import messages as m
from vehicle_agent import compat
from vehicle_agent.control.cleaning import CleaningState
from vehicle_agent.uplink.topics import MessageClass

BOTH = pytest.mark.parametrize(
    "module", [compat, firmware_bridge.compat], ids=lambda mod: mod.__name__
)


class Colour(compat.StrEnum):
    RED = "red"
    DARK_BLUE = enum.auto()


class Paint(BaseModel):
    colour: Colour


def test_a_str_enum_member_is_its_value_as_text() -> None:
    assert str(Colour.RED) == "red"
    assert f"{Colour.RED}" == "red"
    assert f"{Colour.RED:>5}|" == "  red|"
    assert "%s" % Colour.RED == "red"  # noqa: UP031 - the %-format path is what this checks
    by_value: dict[str, int] = {Colour.RED: 1}
    assert by_value["red"] == 1  # equal to, and hashing as, its value
    assert Colour("red") is Colour.RED
    assert repr(Colour.RED) == "<Colour.RED: 'red'>"
    assert Colour.DARK_BLUE.value == "dark_blue"
    assert isinstance(Colour.RED, str)


def test_a_str_enum_member_serialises_as_its_value() -> None:
    assert json.dumps({"c": Colour.RED}) == '{"c": "red"}'
    assert Paint(colour=Colour.RED).model_dump(mode="json") == {"colour": "red"}
    assert Paint.model_validate({"colour": "red"}).colour is Colour.RED


def test_the_projects_str_enums_use_the_shim() -> None:
    assert str(CleaningState.VERIFYING) == "verifying"
    assert f"{MessageClass.TELEMETRY}" == "telemetry"
    if sys.version_info >= (3, 11):
        assert issubclass(Colour, enum.StrEnum)  # novm - the standard library's own class


def test_utc_is_the_utc_timezone() -> None:
    assert compat.UTC is timezone.utc
    assert datetime(2026, 1, 1, tzinfo=compat.UTC).isoformat() == "2026-01-01T00:00:00+00:00"


def test_tomllib_reads_toml_and_names_the_error() -> None:
    assert compat.tomllib.loads('a = 1\n[b]\nc = "d"\n') == {"a": 1, "b": {"c": "d"}}
    with pytest.raises(compat.tomllib.TOMLDecodeError):
        compat.tomllib.loads("a = \n")


@BOTH
async def test_wait_for_returns_the_result(module: ModuleType) -> None:
    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    assert await module.wait_for(answer(), 1.0) == 42


@BOTH
async def test_wait_for_raises_the_builtin_timeout_error(module: ModuleType) -> None:
    with pytest.raises(TimeoutError) as caught:
        await module.wait_for(asyncio.Event().wait(), 0.01)
    assert type(caught.value) is TimeoutError


@BOTH
async def test_wait_for_lets_the_awaitables_own_errors_through(module: ModuleType) -> None:
    async def silent_mcu() -> None:
        raise McuTimeoutError("/dev/ttyTHS1", "identify", 3, 0.5)

    with pytest.raises(McuTimeoutError):
        await module.wait_for(silent_mcu(), 1.0)


@BOTH
async def test_wait_for_is_cancelled_from_outside(module: ModuleType) -> None:
    task = asyncio.create_task(module.wait_for(asyncio.Event().wait(), 10.0))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_timeout_raises_the_builtin_timeout_error_and_lets_fast_work_finish() -> None:
    async with compat.timeout(1.0):
        await asyncio.sleep(0)
    with pytest.raises(TimeoutError) as caught:
        async with compat.timeout(0.01):
            await asyncio.Event().wait()
    assert type(caught.value) is TimeoutError


@BOTH
async def test_a_task_group_reports_its_failures_in_an_exception_group(module: ModuleType) -> None:
    async def fail() -> None:
        await asyncio.sleep(0)
        raise ValueError("boom")

    children: list[asyncio.Task[None]] = []

    async def run() -> None:
        async with module.TaskGroup() as group:
            children.append(group.create_task(asyncio.Event().wait()))
            group.create_task(fail())

    with pytest.raises(compat.ExceptionGroup) as caught:
        await run()
    assert children[0].cancelled()
    matched, rest = caught.value.split(ValueError)
    assert matched is not None
    assert rest is None
    assert isinstance(caught.value, compat.BaseExceptionGroup)


@BOTH
async def test_a_cancelled_parent_cancels_the_group_and_stays_cancelled(module: ModuleType) -> None:
    children: list[asyncio.Task[None]] = []

    async def parent() -> None:
        async with module.TaskGroup() as group:
            children.append(group.create_task(asyncio.Event().wait()))

    task = asyncio.create_task(parent())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert children[0].cancelled()


def test_all_faults_is_every_flag_and_fits_its_u16_field() -> None:
    assert int(m.ALL_FAULTS) == sum(int(flag) for flag in m.Fault) == 0x7F
    assert all(flag in m.ALL_FAULTS for flag in m.Fault)
    struct.pack("<H", m.ALL_FAULTS)


async def test_a_task_group_also_works_in_a_task_made_without_the_loops_factory() -> None:
    """On 3.10 the backport then runs the task on a stand-in task for the group's lifetime."""

    async def body() -> int:
        async with compat.TaskGroup() as group:
            child = group.create_task(asyncio.sleep(0, result=7))
        async with compat.timeout(1.0):
            await asyncio.sleep(0)
        return child.result()

    assert await asyncio.Task(body()) == 7
