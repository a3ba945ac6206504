"""`tools.soak`'s verdict from its samples and what the independent subscriber saw: a lost
telemetry sequence number, an unanswered command, memory that keeps growing after the warm-up
or a file descriptor leak each fail the soak."""

from __future__ import annotations

from dataclasses import replace

from tools.soak import Commands, Observed, Sample, markdown, summarise


def samples(rss_end: float = 200.0, fds_end: int = 20) -> list[Sample]:
    """An hour every 10 s: RSS from 150 to 200 MiB in the warm-up, then flat to `rss_end`."""
    out = []
    for i in range(361):
        t = i * 10.0
        rss = 150 + 50 * min(t, 600) / 600 + (rss_end - 200) * max(0.0, t - 600) / 3000
        fds = 20 if t < 3000 else fds_end
        out.append(Sample(t, round(rss, 1), fds, 18, 300.0, 30.0))
    return out


def verdict(**changes: object) -> dict[str, object]:
    seen = Observed(telemetry_seq=list(range(1, 721)))
    commands = Commands(sent=[f"c{i}" for i in range(900)])
    commands.answered = set(commands.sent)
    args: dict[str, object] = {
        "samples": samples(),
        "seen": seen,
        "commands": commands,
        "updates": [{"model": "m@2", "outcome": "swapped", "seconds": 4.0}],
        "outages": 12,
        "duration": 3600.0,
        "returncode": 0,
        **changes,
    }
    return summarise(**args)  # type: ignore[arg-type]


def test_a_clean_hour_passes_and_says_so() -> None:
    report = verdict()
    assert report["passed"] is True
    assert report["telemetry"] == {
        "received": 720, "first": 1, "last": 720, "lost": 0, "duplicates": 0
    }  # fmt: skip
    assert report["rss_mb"]["growth"] == 0.0  # type: ignore[index]
    assert "PASS" in markdown(report)


def test_a_gap_in_telemetry_seq_fails() -> None:
    seen = Observed(telemetry_seq=[*range(1, 300), *range(301, 721), 5])  # one lost, one twice
    report = verdict(seen=seen)
    assert report["telemetry"]["lost"] == 1  # type: ignore[index]
    assert report["telemetry"]["duplicates"] == 1  # type: ignore[index]
    assert report["checks"]["telemetry_seq_lost_0"] is False  # type: ignore[index]
    assert report["passed"] is False


def test_a_reply_seen_only_by_the_subscriber_counts_and_a_missing_one_fails() -> None:
    commands = Commands(sent=["a", "b", "c"], answered={"a"})
    seen = Observed(telemetry_seq=list(range(1, 721)), replies={"b"})
    report = verdict(commands=commands, seen=seen)
    assert report["commands"]["answered"] == 2  # type: ignore[index]
    assert report["commands"]["unanswered"] == ["c"]  # type: ignore[index]
    assert report["passed"] is False


def test_memory_growth_after_the_warm_up_and_a_descriptor_leak_fail() -> None:
    assert verdict(samples=samples(rss_end=209.0))["passed"] is True  # 4.5 %
    grown = verdict(samples=samples(rss_end=212.0))  # 6 %
    assert grown["checks"]["rss_growth_under_5_percent"] is False  # type: ignore[index]
    leaking = verdict(samples=samples(fds_end=40))
    assert leaking["checks"]["fds_flat"] is False  # type: ignore[index]
    one_more = verdict(samples=samples(fds_end=21))
    assert one_more["checks"]["fds_flat"] is False  # type: ignore[index]


def test_descriptors_that_dip_while_a_link_is_out_are_not_a_leak() -> None:
    dipped = samples()
    for i in (63, 120, 93):  # the broker's socket, then the MCU's pty, closed for a sample
        dipped[i] = replace(dipped[i], fds=15)
    report = verdict(samples=dipped)
    assert report["checks"]["fds_flat"] is True  # type: ignore[index]
    assert report["fds"]["min"] == 15  # type: ignore[index]
    assert report["fds"]["typical"] == 20  # type: ignore[index]
