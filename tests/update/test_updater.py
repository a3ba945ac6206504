"""`ModelUpdater` on its own (no broker): a transfer that stalls asks for its chunks again, and
chunks it already has never take a place in its queue."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import pytest

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
    topics = Topics("fleet", "veh-1", "front")
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


Events = list[tuple[str, dict[str, Any]]]


def updater_for(tmp_path: Path, keys: Keys, **update: Any) -> tuple[ModelUpdater, Topics, Events]:
    shipped = tmp_path / "shipped"
    tiny_model(shipped, "1.0.0")
    config = parse_config(
        {
            "agent": {"vehicle_id": "veh-1", "state_dir": str(tmp_path / "state")},
            "enhance": {"model": "tiny", "model_dirs": [str(shipped)]},
            "update": {"trusted_keys": keys.trusted(), "device": "d", "golden_count": 1, **update},
        }
    )
    topics = Topics("fleet", "veh-1", "front")
    events: Events = []
    updater = ModelUpdater(config, topics, lambda type_, **data: events.append((type_, data)))
    return updater, topics, events


@pytest.mark.parametrize(
    ("index", "payload", "words"),
    [
        (-1, b"x" * 2000, "is 2000 bytes, expected"),  # the last chunk, too long
        (0, b"x" * 1000, "chunk 0 is 1000 bytes, expected 1024"),
        (99, b"x" * 1024, "chunk 99 out of range"),  # more chunks than the manifest says
    ],
    ids=["oversize-last", "short", "beyond-the-manifest"],
)
async def test_a_chunk_that_breaks_the_manifest_refuses_the_update_and_ends_the_transfer(
    tmp_path: Path, index: int, payload: bytes, words: str
) -> None:
    keys = Keys()
    updater, topics, events = updater_for(tmp_path, keys, stall_s=0.5, window_chunks=3)
    subs = FakeSubscriptions()
    updater.subscriptions = subs
    model = tiny_model(tmp_path / "src", "1.0.1", "other")
    offer = offer_for(model, keys.new)
    manifest = UpdateManifest.model_validate(offer.manifest)
    chunks = split((model / "model.onnx").read_bytes(), 1024)
    index = index % manifest.chunks if index < 0 else index
    task = asyncio.create_task(updater.run())
    try:
        updater.on_message(topics.update_offer, offer.to_bytes())
        await wait_until(lambda: any(t == "model_update_offered" for t, _ in events))
        updater.on_message(topics.update_chunk(offer.update_id, 1), chunks[1])
        updater.on_message(topics.update_chunk(offer.update_id, index), payload)
        await wait_until(lambda: any(t == "model_update_refused" for t, _ in events), 0.5)
        await asyncio.sleep(1.2)  # two stall_s: nothing is asked for again
        # The same offer again (a reconnect) is ignored: it was handled.
        updater.on_message(topics.update_offer, offer.to_bytes())
        await asyncio.sleep(0.1)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await updater.close()
    [(_, refused)] = [e for e in events if e[0] == "model_update_refused"]
    assert refused["reason"] == "bad_chunk"
    assert refused["update_id"] == offer.update_id
    assert words in str(refused["detail"])
    assert f"{manifest.chunks} chunks of 1024 bytes" in str(refused["detail"])
    assert [t for t, _ in events].count("model_update_offered") == 1
    assert not [c for c in subs.calls if c[0] == "refresh"]
    wanted = {t for kind, t in subs.calls if kind == "want" and "/data/" in t}
    dropped = {t for kind, t in subs.calls if kind == "drop"}
    assert wanted == dropped  # every chunk subscription ended
    assert not updater.installer.staging(offer.update_id).exists()
    assert updater.installer.offer_outcome(offer.update_id) == "refused:bad_chunk"
