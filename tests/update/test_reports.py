"""What the operator's tools wait for is reported at least once across kills: a refusal kept
until the outbox holds it is emitted again after a kill, and a swap whose `model_swapped`
never left is announced at the next start (`reconciled`), once."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from tests.update.helpers import Keys, offer_for, tiny_model
from tests.update.test_install import install
from tests.update.test_updater import Events, FakeSubscriptions, updater_for, wait_until
from vehicle_agent.update.install import ModelInstaller
from vehicle_agent.update.manifest import UpdateManifest
from vehicle_agent.update.transfer import split
from vehicle_agent.update.updater import ModelUpdater


async def started(updater: ModelUpdater) -> asyncio.Task[None]:
    """Run `updater` until its start-up is over (it subscribes to offers last)."""
    subs = FakeSubscriptions()
    updater.subscriptions = subs
    task = asyncio.create_task(updater.run())
    await wait_until(lambda: ("want", updater.topics.update_offer) in subs.calls or task.done())
    return task


async def killed(task: asyncio.Task[None]) -> None:
    """As a kill -9 would: the task ends, and no clean stop is recorded."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def of(events: Events, type_: str) -> list[dict[str, Any]]:
    return [data for t, data in events if t == type_]


async def test_a_swap_whose_event_never_left_is_announced_at_the_next_start_once(
    tmp_path: Path,
) -> None:
    keys = Keys()
    updater, topics, events = updater_for(tmp_path, keys)
    task = await started(updater)
    # A fresh vehicle on its shipped model: nothing to announce, nothing written.
    assert events == []
    assert not updater.installer.ledger_path.exists()
    model = tiny_model(tmp_path / "src", "1.0.1", "other")
    offer = offer_for(model, keys.new)
    manifest = UpdateManifest.model_validate(offer.manifest)
    swapped = asyncio.Event()

    async def reload(reason: str) -> str:
        # The pipeline takes the new chain; its `model_swapped` would leave with the next
        # frame, and the daemon is killed before that frame.
        swapped.set()
        return manifest.label

    updater.reload = reload
    updater.on_message(topics.update_offer, offer.to_bytes())
    for i, chunk in enumerate(split((model / "model.onnx").read_bytes(), manifest.chunk_size)):
        updater.on_message(topics.update_chunk(offer.update_id, i), chunk)
    await asyncio.wait_for(swapped.wait(), 30)
    await killed(task)
    assert of(events, "model_swapped") == []
    assert updater.installer.active_version("tiny") == "1.0.1"

    # The next process: it tells the fleet what it runs.
    again, _, events = updater_for(tmp_path, keys)
    await killed(await started(again))
    assert of(events, "model_swapped") == [
        {
            "previous": None,
            "current": "tiny@1.0.1",
            "reason": "reconciled",
            "condition": None,
            "model": "tiny@1.0.1",
        }
    ]
    # ... once: a third start has nothing to add.
    third, _, events = updater_for(tmp_path, keys)
    await killed(await started(third))
    assert of(events, "model_swapped") == []


async def test_each_later_swap_is_announced_beside_the_version_reported_before(
    tmp_path: Path,
) -> None:
    keys = Keys()
    installer = ModelInstaller(tmp_path / "state" / "models")
    for version, previous in (("1.0.1", None), ("1.0.2", "tiny@1.0.1")):
        model = tiny_model(tmp_path / "src" / version, version, "other")
        manifest, _ = install(installer, offer_for(model, keys.new), model)
        installer.activate(manifest)  # killed right after the pointer swap
        updater, _, events = updater_for(tmp_path, keys)
        await killed(await started(updater))
        [swap] = of(events, "model_swapped")
        assert (swap["previous"], swap["model"]) == (previous, f"tiny@{version}")
        assert installer.reported() == {"tiny": version}


async def test_a_refusal_is_kept_until_the_outbox_holds_it_and_emitted_again_after_a_kill(
    tmp_path: Path,
) -> None:
    keys = Keys()
    updater, topics, events = updater_for(tmp_path, keys)
    never = asyncio.Event()

    async def stuck() -> None:
        await never.wait()  # the outbox never confirms: the process dies first

    updater.flushed = stuck
    task = await started(updater)
    model = tiny_model(tmp_path / "src", "1.0.1", "other")
    offer = offer_for(model, keys.stranger, "someone")  # a key the vehicle does not trust
    updater.on_message(topics.update_offer, offer.to_bytes())
    await wait_until(lambda: bool(of(events, "model_update_refused")))
    await killed(task)
    [kept] = updater.installer.pending_reports()
    assert kept.type == "model_update_refused"
    assert kept.data["reason"] == "unknown_key"

    flushes = 0

    async def flushed() -> None:
        nonlocal flushes
        flushes += 1

    again, _, events = updater_for(tmp_path, keys)
    again.flushed = flushed
    await killed(await started(again))
    [refused] = of(events, "model_update_refused")
    assert refused == kept.data
    assert flushes >= 1
    assert again.installer.pending_reports() == []
    # Nothing is left of it but the outcome (a redelivered offer is still ignored).
    assert [p.name for p in again.installer.staging_root.iterdir()] == ["outcomes.json"]
