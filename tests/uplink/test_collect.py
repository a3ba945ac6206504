"""The fleet's data collector (`python -m tools.fleet collect`) against the real broker: frames
sorted into good and poor, duplicates dropped, an upload split across a restart completed, bad
messages refused without stopping it, one camera taken when named, the single-camera layout
ignored with one line."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
from pathlib import Path

import cv2
import pytest

from tests.uplink.broker import OPERATOR, Broker, Certs
from tests.uplink.conftest import PASSWORDS, operator_access
from tests.uplink.helpers import OPERATOR_CREDENTIAL, operator_cli, record
from tools.dataset import DatasetError, DatasetWriter, describe, read_dataset
from tools.fleet import FleetClient, build_parser, cmd_collect, collect
from vehicle_agent.config import UploadConfig
from vehicle_agent.records import AdhesionEstimate
from vehicle_agent.secrets import env_name
from vehicle_agent.uplink.outbox import OutMessage
from vehicle_agent.uplink.topics import Topics
from vehicle_agent.uplink.uploads import UploadPolicy, encode_upload

SETTINGS = UploadConfig(chunk_kib=1, max_width=128, jpeg_quality=90)


def upload(
    vehicle: str,
    seq: int,
    upload_id: str,
    *,
    brightness: int = 120,
    soiled: bool = False,
    camera: str = "front",
) -> list[OutMessage]:
    """The messages a vehicle publishes for one frame (meta first, then its chunks)."""
    policy = UploadPolicy(SETTINGS, clock=lambda: 0.0)
    policy.request(1, "raw", None)
    rec = record(seq, value=brightness, size=(96, 128))
    if soiled:
        rec = rec.replace(adhesion=AdhesionEstimate(0.9, 0.2))
    (job,) = policy.on_frame(rec)
    _, messages = encode_upload(job, Topics("fleet", vehicle, camera), vehicle, SETTINGS, upload_id)
    return messages


async def publish(fleet: FleetClient, messages: list[OutMessage]) -> None:
    for message in messages:
        await fleet.client.publish(message.topic, message.payload, qos=1)


def collect_args(broker: Broker, certs: Certs, out: Path, *extra: str) -> list[str]:
    return [*operator_cli(broker, certs), "collect", "--out", str(out), *extra]


@pytest.fixture
def operator_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(env_name(OPERATOR_CREDENTIAL), PASSWORDS[OPERATOR])


@pytest.mark.usefixtures("operator_password")
async def test_collect_sorts_dedupes_and_resumes_an_upload_split_by_a_restart(
    broker: Broker, certs: Certs, operator: FleetClient, tmp_path: Path
) -> None:
    out = tmp_path / "dataset"
    args = build_parser().parse_args(collect_args(broker, certs, out, "--idle-exit", "1.5"))
    good = upload("veh-1", 1, "up-good")
    dark = upload("veh-2", 2, "up-dark", brightness=10)
    dirty = upload("veh-1", 3, "up-dirty", soiled=True)
    again = upload("veh-1", 1, "up-again")  # the same picture as up-good, another upload id
    split = upload("veh-2", 4, "up-split")
    assert len(split) > 3

    # First run: it registers its persistent session, then stops while nothing comes.
    assert await cmd_collect(args) == 0
    await publish(operator, good + good + dark + dirty + again + split[:2])
    assert await cmd_collect(args) == 0
    # The collector is down while the rest of the split upload is published: the broker keeps
    # it for the collector's session, and the chunks already received are on disk.
    assert {p.name for p in (out / "partial").iterdir()} == {"up-split"}
    await publish(operator, split[2:])
    assert await cmd_collect(args) == 0

    entries = {e.upload_id: e for e in read_dataset(out)}
    assert set(entries) == {"up-good", "up-dark", "up-dirty", "up-split"}
    assert entries["up-good"].label == "good"
    assert entries["up-split"].label == "good"
    assert entries["up-dark"].label == "poor"
    assert any("dark" in why for why in entries["up-dark"].why)
    assert entries["up-dirty"].label == "poor"
    assert any("soiled" in why for why in entries["up-dirty"].why)
    for entry in entries.values():
        image = cv2.imread(str(out / entry.path))
        assert image is not None
        assert image.shape == (96, 128, 3)
        assert entry.path.startswith(f"{entry.label}/{entry.vehicle_id}/")
    assert not list((out / "partial").iterdir())
    summary = describe(list(entries.values()))
    assert summary["vehicles"] == ["veh-1", "veh-2"]
    assert (summary["good"], summary["poor"]) == (2, 2)


def test_bad_messages_are_refused_and_leave_nothing_behind(tmp_path: Path) -> None:
    writer = DatasetWriter(tmp_path)
    with pytest.raises(DatasetError, match="bad frame meta"):
        writer.add("fleet/veh-1/front/frames/up-1/meta", b"{not json")
    with pytest.raises(DatasetError, match="not a safe identifier"):
        writer.add("fleet/veh-1/front/frames/..%2F/0", b"x")
    with pytest.raises(DatasetError, match="unknown part"):
        writer.add("fleet/veh-1/front/frames/up-1/oops", b"x")
    messages = upload("veh-1", 5, "up-5")
    corrupt = [*messages[:-1], dataclasses.replace(messages[-1], payload=b"garbage")]
    for message in corrupt[:-1]:
        assert writer.add(message.topic, message.payload) is None
    with pytest.raises(DatasetError, match="do not match"):
        writer.add(corrupt[-1].topic, corrupt[-1].payload)
    assert read_dataset(tmp_path) == []
    assert not list((tmp_path / "partial").iterdir())
    # The same upload sent properly afterwards is taken.
    done = [writer.add(m.topic, m.payload) for m in messages]
    assert done[-1] is not None
    assert writer.stats.refused == 4


def test_an_index_line_cut_by_a_crash_is_dropped_and_the_frame_taken_again(
    tmp_path: Path,
) -> None:
    writer = DatasetWriter(tmp_path)
    for message in upload("veh-1", 6, "up-6"):
        writer.add(message.topic, message.payload)
    index = tmp_path / "index.jsonl"
    line = index.read_text()
    index.write_text(line + line[: len(line) // 2])  # a second append cut short
    writer = DatasetWriter(tmp_path)
    assert [e.upload_id for e in read_dataset(tmp_path)] == ["up-6"]
    assert writer.frames == 1
    assert json.loads(index.read_text().splitlines()[0])["upload_id"] == "up-6"
    assert cv2.imread(str(tmp_path / read_dataset(tmp_path)[0].path)) is not None


async def test_collect_takes_one_camera_when_named_and_says_once_that_old_layout_is_ignored(
    broker: Broker, certs: Certs, operator: FleetClient, tmp_path: Path
) -> None:
    rear = upload("veh-1", 1, "up-rear", camera="rear")
    front = upload("veh-1", 2, "up-front")
    old = [
        dataclasses.replace(m, topic=m.topic.replace("/front/", "/"))
        for m in upload("veh-1", 3, "up-old")
    ]
    log = io.StringIO()
    ready = asyncio.Event()
    task = asyncio.create_task(
        collect(
            operator_access(broker, certs),
            tmp_path / "dataset",
            camera="rear",
            count=1,
            ready=ready,
            log=log,
        )
    )
    await asyncio.wait_for(ready.wait(), 10)
    await publish(operator, old + front + rear)
    stats = await asyncio.wait_for(task, 20)
    assert stats.saved == 1
    [entry] = [p.stem for p in (tmp_path / "dataset").rglob("*.jpg")]
    assert entry == "up-rear"
    notices = [line for line in log.getvalue().splitlines() if "single-camera" in line]
    expected = (
        "fleet: fleet/veh-1/frames/up-old/meta: single-camera topic layout (no camera level), "
        "ignored: that daemon predates per-camera topics; upgrade it (its topics become "
        "<prefix>/<vehicle_id>/<camera_id>/…)"
    )
    assert notices == [expected]


async def test_two_shared_collectors_store_each_upload_exactly_once(
    broker: Broker, certs: Certs, operator: FleetClient, tmp_path: Path
) -> None:
    # Each upload is a meta and several chunks: the broker hands each message to one member of
    # the share group, so most uploads arrive in pieces at both instances.
    uploads = {
        f"up-{i}": upload(f"veh-{i % 3}", i, f"up-{i}", brightness=60 + 9 * i) for i in range(12)
    }
    assert all(len(messages) > 3 for messages in uploads.values())
    out = tmp_path / "dataset"
    published = asyncio.Event()
    readies = [asyncio.Event(), asyncio.Event()]
    logs = [io.StringIO(), io.StringIO()]
    tasks = [
        asyncio.create_task(
            collect(
                operator_access(broker, certs),
                out,
                share="collectors",
                instance=name,
                idle_exit_s=1.5,
                ready=ready,
                stop=published,
                log=log,
            )
        )
        for name, ready, log in zip(("a", "b"), readies, logs, strict=True)
    ]
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 10)
    everything = [m for messages in uploads.values() for m in messages]
    # A QoS 1 redelivery of two whole uploads (another instance may get the copy).
    await publish(operator, everything + uploads["up-3"] + uploads["up-7"])
    published.set()
    stats = await asyncio.wait_for(asyncio.gather(*tasks), 30)

    entries = read_dataset(out)
    assert sorted(e.upload_id for e in entries) == sorted(uploads)
    assert len({e.path for e in entries}) == len(uploads)
    assert len(list(out.rglob("*.jpg"))) == len(uploads)
    assert not list((out / "partial").iterdir())
    assert sum(s.saved for s in stats) == len(uploads)
    # Each message went to one instance, and both had a share.
    sent = len(everything) + len(uploads["up-3"]) + len(uploads["up-7"])
    assert sum(s.messages for s in stats) == sent
    assert all(s.messages >= sent // 4 for s in stats), [log.getvalue() for log in logs]


async def test_a_shared_collector_is_refused_without_a_proper_group_and_instance(
    broker: Broker, certs: Certs, tmp_path: Path
) -> None:
    access = operator_access(broker, certs)
    with pytest.raises(ValueError, match="instance name"):
        await collect(access, tmp_path / "d", share="collectors")
    with pytest.raises(ValueError, match="share group 'a/b'"):
        await collect(access, tmp_path / "d", share="a/b", instance="x")
    assert not (tmp_path / "d").exists()
