"""`ModelUpdater` on its own (no broker): a transfer that stalls asks for its chunks again, and
chunks it already has never take a place in its queue."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

from tests.update.helpers import Keys, offer_for, tiny_model
from vehicle_agent.config import parse_config
from vehicle_agent.update.manifest import UpdateManifest
from vehicle_agent.update.transfer import split
from vehicle_agent.update.updater import ModelUpdater
from vehicle_agent.uplink.topics import Topics


class FakeSubscriptions:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def want(self, topic_filter: str) -> None:
        self.calls.append(("want", topic_filter))

    def drop(self, topic_filter: str) -> None:
        self.calls.append(("drop", topic_filter))

    def refresh(self, topic_filter: str) -> None:
        self.calls.append(("refresh", topic_filter))


async def wait_until(predicate: Any, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_a_stalled_transfer_subscribes_again_and_skips_what_it_has(tmp_path: Path) -> None:
    keys = Keys()
    shipped = tmp_path / "shipped"
    tiny_model(shipped, "1.0.0")
    config = parse_config(
        {
            "agent": {"vehicle_id": "veh-1", "state_dir": str(tmp_path / "state")},
            "enhance": {"model": "tiny", "model_dirs": [str(shipped)]},
            "update": {
                "trusted_keys": keys.trusted(),
                "stall_s": 0.5,
                "device": "d",
                "window_chunks": 3,
                "golden_count": 1,
            },
        }
    )
    topics = Topics("fleet", "veh-1")
    events: list[tuple[str, dict[str, Any]]] = []
    updater = ModelUpdater(config, topics, lambda type_, **data: events.append((type_, data)))
    subs = FakeSubscriptions()
    updater.subscriptions = subs
    model = tiny_model(tmp_path / "src", "1.0.1", "other")
    offer = offer_for(model, keys.new)
    chunks = split((model / "model.onnx").read_bytes(), 1024)
    task = asyncio.create_task(updater.run())
    try:
        updater.on_message(topics.update_offer, offer.to_bytes())
        first, second = (topics.update_chunk(offer.update_id, i) for i in (0, 1))
        await wait_until(lambda: ("want", first) in subs.calls)
        # A window of chunks is asked for, not all of them.
        asked = [t for kind, t in subs.calls if kind == "want" and "/data/" in t]
        assert len(asked) == min(len(chunks), config.update.window_chunks) < len(chunks)
        updater.on_message(first, chunks[0])
        await wait_until(lambda: any(t == "model_update_progress" for t, _ in events))
        assert ("drop", first) in subs.calls  # each chunk's subscription ends when it arrives
        # Nothing more arrives: after stall_s the updater asks for its window again.
        await wait_until(lambda: ("refresh", second) in subs.calls, 5)
        updater.on_message(topics.update_chunk(offer.update_id, 0), chunks[0])
        assert updater._queue.empty()  # a chunk it has is dropped on arrival
        for i, chunk in enumerate(chunks):
            updater.on_message(topics.update_chunk(offer.update_id, i), chunk)
        await wait_until(lambda: any(t == "model_update_installed" for t, _ in events))
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await updater.close()
    wanted = {t for kind, t in subs.calls if kind == "want" and "/data/" in t}
    dropped = {t for kind, t in subs.calls if kind == "drop"}
    assert wanted == dropped  # no chunk subscription is left behind
    manifest = UpdateManifest.model_validate(offer.manifest)
    assert updater.installer.active_version("tiny") == manifest.version
