"""Frame uploads (which frames, chunked JPEG that reassembles, rate limit) and telemetry snapshots
(the latest frame's condition and model, the camera module's temperatures)."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from tests.uplink.helpers import record
from tools.fleet import FrameAssembler
from vehicle_agent.config import UploadConfig
from vehicle_agent.quality.condition import CONDITIONS
from vehicle_agent.records import Actuation, AdhesionEstimate
from vehicle_agent.uplink.docs import TELEMETRY_EXAMPLE
from vehicle_agent.uplink.telemetry import SystemSample, SystemSampler, TelemetryAggregator
from vehicle_agent.uplink.topics import OutboxStatus, Topics, UplinkStatus
from vehicle_agent.uplink.uploads import UploadPolicy, encode_upload


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_good_frame_is_uploaded_every_n_seconds_and_bad_ones_never() -> None:
    clock = Clock()
    policy = UploadPolicy(
        UploadConfig(good_frame_every_s=60, max_frames_per_hour=3600), clock=clock
    )
    assert [j.reason for j in policy.on_frame(record(0))] == ["good_frame"]
    clock.now = 30
    assert policy.on_frame(record(1)) == []
    clock.now = 61
    assert policy.on_frame(record(2, value=5)) == []  # too dark
    assert policy.on_frame(record(3, sharpness=1.0)) == []  # blurred
    dirty = record(4).replace(adhesion=AdhesionEstimate(0.9, 0.5))
    assert policy.on_frame(dirty) == []
    assert [j.reason for j in policy.on_frame(record(5))] == ["good_frame"]


def test_requests_take_the_next_frames_within_the_rate_limit() -> None:
    clock = Clock()
    policy = UploadPolicy(UploadConfig(good_frame_every_s=0, max_frames_per_hour=3), clock=clock)
    assert policy.request(5, "enhanced", "c-1") == 3
    assert policy.skipped == 2
    jobs = [j for i in range(5) for j in policy.on_frame(record(i))]
    assert [(j.reason, j.content, j.command_id) for j in jobs] == [
        ("request", "enhanced", "c-1")
    ] * 3
    assert policy.request(1, "raw", "c-2") == 0  # bucket empty
    clock.now = 1200.0  # one token per 20 minutes at 3 per hour
    assert policy.request(1, "raw", "c-3") == 1


def test_frames_before_and_after_a_cleaning_are_uploaded() -> None:
    policy = UploadPolicy(
        UploadConfig(good_frame_every_s=0, around_cleaning_frames=2), clock=Clock()
    )
    for i in range(5):
        policy.on_frame(record(i))
    before = policy.cleaning_started()
    assert [(j.reason, j.record.frame.seq) for j in before] == [
        ("before_cleaning", 3),
        ("before_cleaning", 4),
    ]
    policy.cleaning_finished()
    after = [j for i in range(5, 9) for j in policy.on_frame(record(i))]
    assert [(j.reason, j.record.frame.seq) for j in after] == [
        ("after_cleaning", 5),
        ("after_cleaning", 6),
    ]


def test_an_upload_is_chunked_jpeg_with_metadata_that_reassembles() -> None:
    topics = Topics("fleet", "veh-1", "front")
    settings = UploadConfig(chunk_kib=1, max_width=64, jpeg_quality=95)
    policy = UploadPolicy(settings, clock=Clock())
    policy.request(1, "raw", "c-9")
    (job,) = policy.on_frame(record(7, size=(96, 128)))
    meta, messages = encode_upload(job, topics, "veh-1", settings, "up-1")
    assert (meta.width, meta.height) == (64, 48)  # downscaled to max_width
    assert meta.command_id == "c-9"
    assert meta.frame_seq == 7
    assert meta.quality is not None
    assert meta.quality.sharpness == 500.0
    assert meta.chunks == len(messages) - 1 > 1
    assert messages[0].topic == "fleet/veh-1/front/frames/up-1/meta"
    assert messages[1].topic == "fleet/veh-1/front/frames/up-1/0"
    assert {m.group for m in messages} == {"up-1"}
    assembler = FrameAssembler()
    done = None
    for message in reversed(messages):  # any order
        done = assembler.add(message.topic, message.payload) or done
    assert done is not None
    _, data = done
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    assert image.shape == (48, 64, 3)


def test_telemetry_snapshot_averages_the_interval_and_counts_drops() -> None:
    aggregator = TelemetryAggregator("veh-1", "front", started=100.0)
    for i in range(4):
        rec = record(i, value=100 + 20 * i).replace(actuation=Actuation(0.25))
        aggregator.on_frame(rec)
    system = SystemSample(10.0, 5.0, 40.0, 123.4, {"cpu/0": 51.0})
    status = UplinkStatus(
        connected=True,
        connects=1,
        sent=9,
        outbox=OutboxStatus(pending=2, pending_bytes=10, dropped={}),
    )
    counters = {"frames_in": 10, "frames_out": 8, "frames_dropped": 2}
    first = aggregator.snapshot(
        seq=5, now_wall=1.7e9, counters=counters, system=system, uplink=status, now_mono=102.0
    )
    assert first.seq == 5
    assert first.fps == 2.0
    assert first.interval_s == 2.0
    assert first.quality is not None
    assert first.quality.brightness == 130.0
    assert first.fan_duty == 0.25
    assert first.frames_dropped_interval == 2
    assert first.temperatures_c == {"cpu/0": 51.0}
    counters["frames_dropped"] = 3
    second = aggregator.snapshot(
        seq=6, now_wall=1.7e9, counters=counters, system=system, uplink=status, now_mono=104.0
    )
    assert second.quality is None
    assert second.fps == 0.0
    assert second.frames_dropped_interval == 1


def test_system_sampler_reads_cpu_and_memory() -> None:
    sample = SystemSampler().sample()
    assert 0 <= sample.memory_percent <= 100
    assert sample.process_rss_mb > 10


def _status() -> UplinkStatus:
    return UplinkStatus(
        connected=True,
        connects=1,
        sent=0,
        outbox=OutboxStatus(pending=0, pending_bytes=0, dropped={}),
    )


def test_telemetry_carries_the_latest_frames_condition_and_model() -> None:
    """Not null: the scene condition and the model's name@version of the latest frame record."""
    aggregator = TelemetryAggregator("veh-1", "front", started=0.0)
    system = SystemSample(1.0, 1.0, 1.0, 1.0)
    night = record(0)
    assert night.quality is not None
    night = night.replace(
        quality=dataclasses.replace(night.quality, condition="low_light"),
        enhancer="onnxruntime:fast-enhance",
        model="fast-enhance@1.0.0",
    )
    aggregator.on_frame(record(1))
    aggregator.on_frame(night)
    snap = aggregator.snapshot(
        seq=1, now_wall=1.7e9, counters={}, system=system, uplink=_status(), now_mono=1.0
    )
    assert (snap.condition, snap.backend, snap.model) == (
        "low_light",
        "onnxruntime:fast-enhance",
        "fast-enhance@1.0.0",
    )
    aggregator.on_frame(record(2))  # classical: no model; default condition "normal"
    snap = aggregator.snapshot(
        seq=2, now_wall=1.7e9, counters={}, system=system, uplink=_status(), now_mono=2.0
    )
    assert (snap.condition, snap.model) == ("normal", None)


def test_telemetry_before_any_frame_has_no_condition_or_model() -> None:
    aggregator = TelemetryAggregator("veh-1", "front", started=0.0)
    snap = aggregator.snapshot(
        seq=1,
        now_wall=1.7e9,
        counters={},
        system=SystemSample(1.0, 1.0, 1.0, 1.0),
        uplink=_status(),
        now_mono=1.0,
    )
    assert (snap.condition, snap.model, snap.temperatures_c) == (None, None, {})


def test_telemetry_adds_the_camera_modules_temperatures_to_the_boards() -> None:
    """The MCU's sensor, cold and hot side readings join psutil's board sensors as camera/…."""
    aggregator = TelemetryAggregator("veh-1", "front", started=0.0)
    snap = aggregator.snapshot(
        seq=1,
        now_wall=1.7e9,
        counters={},
        system=SystemSample(1.0, 1.0, 1.0, 1.0, {"coretemp/0": 50.0}),
        uplink=_status(),
        now_mono=1.0,
        module_temperatures={"sensor": 41.256, "cold_side": 29.8, "hot_side": 47.1},
    )
    assert snap.temperatures_c == {
        "coretemp/0": 50.0,
        "camera/sensor": 41.26,
        "camera/cold_side": 29.8,
        "camera/hot_side": 47.1,
    }


def test_a_frame_upload_names_the_frames_condition_and_model() -> None:
    settings = UploadConfig(max_width=64)
    policy = UploadPolicy(settings, clock=Clock())
    policy.request(1, "raw", "c-1")
    rec = record(3)
    assert rec.quality is not None
    rec = rec.replace(quality=dataclasses.replace(rec.quality, condition="fog"), model="m@2")
    (job,) = policy.on_frame(rec)
    meta, _ = encode_upload(job, Topics("fleet", "veh-1", "front"), "veh-1", settings, "up-2")
    assert (meta.condition, meta.model) == ("fog", "m@2")


def test_the_documented_telemetry_example_uses_real_conditions_and_fields() -> None:
    assert TELEMETRY_EXAMPLE.condition in CONDITIONS
    assert TELEMETRY_EXAMPLE.model is not None
    assert "@" in TELEMETRY_EXAMPLE.model
    assert {"camera/sensor", "camera/cold_side", "camera/hot_side"} <= set(
        TELEMETRY_EXAMPLE.temperatures_c
    )
