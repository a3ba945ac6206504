"""Staged rollout of a signed model update: a canary group first, then waves, each judged on the
vehicles' health before the next is offered, with an automatic abort that withdraws the offer.

    python -m tools.model_update --broker … rollout OFFER MODEL --state build/rollout.json \\
        --canary veh-1 --wave veh-2,veh-3 --wave veh-4,veh-5,veh-6
    python -m tools.model_update --broker … rollout --state build/rollout.json     # resume

The shape is that of AWS IoT Jobs (rollout groups, an `abortConfig` with a failure share and a
minimum count) and hawkBit (cascading groups, an error threshold that stops the rollout):

1. A group is offered the update (`model_update.publish`: chunks and offer, retained).
2. Each of its targets (`VEHICLE` or `VEHICLE/CAMERA`) is followed on its `events` and
   `telemetry`. It **fails** when it refuses the update, rolls it back (health check, swap,
   crash loop), demotes the model's backend (an error, NaN, a blank picture, too slow: the
   enhance stage's `enhancer_demoted`), restarts (its telemetry's `uptime_s` goes back) or says
   nothing within `timeout_s` (unless timeouts are allowed). It is **healthy** once it has run
   the new model for `health_s` after taking it with none of these.
3. After each group, and as soon as the outcome cannot change: when the group's failures reach
   `abort_min` and exceed `abort_share` of the group, the rollout **aborts**: every retained
   offer is removed and every target offered so far is sent `withdraw_update` (the vehicle rolls
   back if the model runs, stops its transfer, and never takes it again). A failure share above
   `pause_share` (when set) **pauses** it instead: nothing is withdrawn, the next wave waits
   for the operator to run the command again.
4. The state (plan, each target's verdict, each decision with its figures) is written to the
   `--state` file atomically after every step; the same command with only `--state` continues a
   rollout that was paused, interrupted or killed, without offering a group twice or judging a
   target again.

Exit status: 0 when every group is through, 1 when aborted, 3 when paused.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

from tools.fleet import FleetClient, ReplyTimeoutError
from vehicle_agent.compat import wait_for
from vehicle_agent.update.manifest import SignedUpdate, UpdateManifest

STATE_VERSION = 1
Status = Literal["running", "paused", "aborted", "done"]
Verdict = Literal["waiting", "took", "healthy", "failed", "timeout"]
TAKEN = {"model_swapped", "model_update_installed", "model_update_confirmed"}


class RolloutError(RuntimeError):
    """The rollout cannot start or go on; the text says why."""


@dataclass(frozen=True)
class Policy:
    health_s: float = 120.0
    """Seconds a target must run the model, after taking it, with no failure to be healthy."""
    timeout_s: float = 900.0
    """Seconds a target has, from its group's offer, to take or refuse the update."""
    abort_share: float = 0.1
    """The rollout aborts when a group's failures exceed this share of the group …"""
    abort_min: int = 1
    """… and are at least this many."""
    pause_share: float | None = None
    """A failure share above this (below the abort line) pauses before the next group."""
    timeouts_fail: bool = True
    """A target that says nothing within `timeout_s` counts as failed (else: left out)."""

    def __post_init__(self) -> None:
        if self.health_s < 0 or self.timeout_s <= 0:
            raise RolloutError("health and timeout must be positive seconds")
        if not 0 <= self.abort_share < 1 or self.abort_min < 1:
            raise RolloutError("abort share must be in [0, 1) and the minimum count ≥ 1")
        if self.pause_share is not None and not 0 <= self.pause_share < 1:
            raise RolloutError("pause share must be in [0, 1)")


@dataclass
class TargetState:
    verdict: Verdict = "waiting"
    detail: str = ""
    took_at: float | None = None
    """Unix time the target was seen running (or installing) the update."""
    uptime_s: float | None = None
    """The highest uptime its telemetry reported since it took the update."""


@dataclass
class Group:
    name: str
    targets: list[str]
    offered_at: float | None = None
    judged: bool = False
    state: dict[str, TargetState] = field(default_factory=dict)

    def counts(self) -> tuple[int, int]:
        """(failures, targets counted): timeouts count only as the policy says."""
        failed = sum(1 for t in self.state.values() if t.verdict == "failed")
        return failed, len(self.targets)


@dataclass
class Rollout:
    update_id: str
    model: str
    offer_file: str
    model_file: str
    policy: Policy
    groups: list[Group]
    status: Status = "running"
    decisions: list[dict[str, Any]] = field(default_factory=list)
    withdrawn: dict[str, Any] = field(default_factory=dict)

    # -- the state file ------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Atomically: a kill leaves the previous state or this one, never half a file."""
        body = {"v": STATE_VERSION, **asdict(self)}
        tmp = path.with_name(path.name + ".tmp")
        path.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("w") as out:
            json.dump(body, out, indent=2)
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Rollout:
        try:
            body = json.loads(path.read_text())
            if body.get("v") != STATE_VERSION:
                raise RolloutError(f"{path}: state version {body.get('v')!r}, not {STATE_VERSION}")
            groups = [
                Group(
                    g["name"],
                    list(g["targets"]),
                    g["offered_at"],
                    g["judged"],
                    {t: TargetState(**s) for t, s in g["state"].items()},
                )
                for g in body["groups"]
            ]
            return cls(
                body["update_id"],
                body["model"],
                body["offer_file"],
                body["model_file"],
                Policy(**body["policy"]),
                groups,
                body["status"],
                list(body["decisions"]),
                dict(body["withdrawn"]),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RolloutError(f"{path}: not a rollout state file ({exc})") from None

    @classmethod
    def plan(
        cls,
        offer: SignedUpdate,
        offer_file: Path,
        model_file: Path,
        groups: Sequence[tuple[str, Sequence[str]]],
        policy: Policy,
    ) -> Rollout:
        seen: set[str] = set()
        for name, targets in groups:
            if not targets:
                raise RolloutError(f"group {name!r} has no vehicles")
            twice = seen.intersection(targets)
            if twice:
                raise RolloutError(f"{', '.join(sorted(twice))} named in two groups")
            seen.update(targets)
        if not groups:
            raise RolloutError("a rollout needs at least one group (--canary or --wave)")
        manifest = UpdateManifest.model_validate(offer.manifest)
        return cls(
            offer.update_id,
            manifest.label,
            str(offer_file.resolve()),
            str(model_file.resolve()),
            policy,
            [Group(n, list(t)) for n, t in groups],
        )

    def decide(self, group: Group, *, final: bool) -> str | None:
        """'abort', 'pause' or None (go on) for `group`; before it is `final`, only an outcome
        that the targets still waiting cannot change."""
        failed, total = group.counts()
        waiting = sum(1 for t in group.targets if group.state[t].verdict in {"waiting", "took"})
        policy = self.policy
        if failed >= policy.abort_min and failed / total > policy.abort_share:
            return "abort"
        if not final or waiting:
            return None
        if policy.pause_share is not None and failed / total > policy.pause_share:
            return "pause"
        return None

    def note(self, group: Group, decision: str, reason: str, log: TextIO) -> None:
        failed, total = group.counts()
        entry = {
            "time": round(time.time(), 3),
            "group": group.name,
            "decision": decision,
            "failed": failed,
            "targets": total,
            "failure_share": round(failed / total, 3),
            "reason": reason,
            "verdicts": {t: f"{s.verdict}: {s.detail}" for t, s in group.state.items()},
        }
        self.decisions.append(entry)
        print(
            f"rollout {self.model}: {group.name}: {decision} ({failed}/{total} failed) {reason}",
            file=log,
            flush=True,
        )


# -- following a group -------------------------------------------------------------------------


def judge(state: TargetState, kind: str, data: dict[str, Any], label: str, now: float) -> None:
    """Update one target's state from one of its messages (`kind`: an event type, or
    'telemetry' with the telemetry as `data`)."""
    if state.verdict in {"healthy", "failed"}:
        return
    name = label.partition("@")[0]
    if kind == "telemetry":
        if data.get("model") == label and state.took_at is None:
            state.verdict, state.took_at, state.detail = "took", now, "runs it (telemetry)"
        uptime = data.get("uptime_s")
        if state.took_at is not None and isinstance(uptime, int | float):
            if state.uptime_s is not None and uptime < state.uptime_s:
                state.verdict = "failed"
                state.detail = f"restarted (uptime {state.uptime_s:.0f} s → {uptime:.0f} s)"
                return
            state.uptime_s = max(uptime, state.uptime_s or 0.0)
        return
    model = data.get("model")
    if kind in TAKEN and (model == label or data.get("current") == label):
        if state.took_at is None:
            state.verdict, state.took_at, state.detail = "took", now, kind
    elif kind == "model_update_refused" and model == label:
        state.verdict, state.detail = "failed", f"refused: {data.get('reason')}"
    elif kind == "model_rolled_back" and model == label:
        state.verdict = "failed"
        state.detail = f"rolled back ({data.get('stage')}): {data.get('reason')}"
    elif kind == "enhancer_demoted" and state.took_at is not None and model == name:
        state.verdict = "failed"
        state.detail = f"{data.get('backend')} demoted ({data.get('kind')}): {data.get('reason')}"


def tick(group: Group, policy: Policy, now: float) -> None:
    """Time-based verdicts: healthy after `health_s` on the model, timeout after `timeout_s`."""
    for target in group.targets:
        state = group.state[target]
        took = state.took_at
        offered = now if group.offered_at is None else group.offered_at
        if state.verdict == "took" and took is not None and now - took >= policy.health_s:
            state.verdict = "healthy"
            state.detail = f"ran it {policy.health_s:g} s with no failure"
        elif state.verdict == "waiting" and now - offered >= policy.timeout_s:
            state.verdict = "failed" if policy.timeouts_fail else "timeout"
            state.detail = f"no answer within {policy.timeout_s:g} s"


async def follow(
    fleet: FleetClient,
    rollout: Rollout,
    group: Group,
    *,
    save: Callable[[], None],
    then: Callable[[], Any] | None = None,
) -> str | None:
    """Follow `group`'s targets until each has a verdict or the decision cannot change; returns
    the decision ('abort', 'pause' or None)."""
    from tools.model_update import target  # noqa: PLC0415 - model_update imports this module

    by_address = {target(t): t for t in group.targets}
    for name in group.targets:
        group.state.setdefault(name, TargetState())
    async with fleet.listen() as queue:
        for vehicle, camera in by_address:
            await fleet.subscribe(fleet.camera_topic(vehicle, camera, "events"))
            await fleet.subscribe(fleet.camera_topic(vehicle, camera, "telemetry"))
        if then is not None:
            await then()
        saved: list[tuple[Verdict, str]] = []
        while True:
            tick(group, rollout.policy, time.time())
            verdicts = [(group.state[t].verdict, group.state[t].detail) for t in group.targets]
            if verdicts != saved:
                save()  # only what changed: a verdict, never a message without news
                saved = verdicts
            decision = rollout.decide(group, final=False)
            open_ = [t for t in group.targets if group.state[t].verdict in {"waiting", "took"}]
            if decision is not None or not open_:
                return decision if decision is not None else rollout.decide(group, final=True)
            try:
                message = await wait_for(queue.get(), 0.5)
            except TimeoutError:
                continue
            address = fleet.topics.parse(message.topic)
            if address is None or address.camera_id is None:
                continue
            who = by_address.get((address.vehicle_id, address.camera_id))
            if who is None:
                continue
            try:
                body = json.loads(message.payload)
            except ValueError:
                continue
            if not isinstance(body, dict):
                continue
            data: Any = body
            kind = "telemetry"
            if address.suffix != "telemetry":
                kind, data = str(body.get("type", "")), body.get("data")
            if isinstance(data, dict):
                judge(group.state[who], kind, data, rollout.model, time.time())


# -- the rollout -------------------------------------------------------------------------------


async def withdraw(
    fleet: FleetClient, rollout: Rollout, offer: SignedUpdate, reason: str, *, reply_s: float
) -> None:
    """Remove the retained offer of every vehicle offered so far and send each of its targets
    `withdraw_update` (kept by the broker for a vehicle that is away, for the offer's life)."""
    from tools.model_update import clear, target  # noqa: PLC0415

    offered = [t for g in rollout.groups if g.offered_at is not None for t in g.targets]
    for vehicle in dict.fromkeys(target(t)[0] for t in offered):
        await clear(fleet, offer, vehicle)
    manifest = UpdateManifest.model_validate(offer.manifest)
    ttl = max(60.0, manifest.expires_at - time.time())

    async def one(name: str) -> None:
        vehicle, camera = target(name)
        args = {"model": rollout.model, "reason": reason[:200]}
        try:
            reply = await fleet.send(
                vehicle, "withdraw_update", args, camera=camera, ttl_s=ttl, timeout_s=reply_s
            )
        except ReplyTimeoutError:
            rollout.withdrawn[name] = {"ok": False, "detail": "no reply yet (kept for the vehicle)"}
            return
        if reply.ok:
            rollout.withdrawn[name] = {"ok": True, **(reply.result or {})}
        else:
            error = reply.error
            rollout.withdrawn[name] = {
                "ok": False,
                "detail": f"{error.code}: {error.message}" if error else "refused",
            }

    await asyncio.gather(*(one(t) for t in offered))


async def run(
    fleet: FleetClient,
    rollout: Rollout,
    offer: SignedUpdate,
    model_file: Path,
    state_file: Path,
    *,
    log: TextIO | None = None,
    reply_s: float = 30.0,
) -> Status:
    """Take `rollout` from where its state says to its end, a pause or an abort (lines on
    `log`, standard error by default)."""
    log = sys.stderr if log is None else log
    from tools.model_update import clear, publish, target  # noqa: PLC0415

    if offer.update_id != rollout.update_id:
        raise RolloutError(
            f"{state_file} is the rollout of update {rollout.update_id}, not this one"
        )
    if rollout.status in {"aborted", "done"}:
        print(f"rollout {rollout.model}: already {rollout.status}", file=log)
        return rollout.status
    rollout.status = "running"

    def save() -> None:
        rollout.save(state_file)

    for group in rollout.groups:
        if group.judged:
            continue

        async def offer_group(group: Group = group) -> None:
            if group.offered_at is None:
                group.offered_at = time.time()
                save()
            # Retained and idempotent: offering again after a restart changes nothing for a
            # vehicle that already handled the update.
            await publish(fleet, offer, model_file, group.targets)
            print(
                f"rollout {rollout.model}: {group.name} offered: {', '.join(group.targets)}",
                file=log,
                flush=True,
            )

        decision = await follow(fleet, rollout, group, save=save, then=offer_group)
        group.judged = True
        for name, state in group.state.items():
            if state.verdict in {"healthy", "failed"}:
                await clear(fleet, offer, target(name)[0])
        if decision == "abort":
            rollout.status = "aborted"
            failed = [f"{t} ({s.detail})" for t, s in group.state.items() if s.verdict == "failed"]
            reason = f"{group.name}: {len(failed)} failed: {'; '.join(failed)}"
            rollout.note(group, "abort", reason, log)
            save()
            await withdraw(fleet, rollout, offer, f"rollout aborted: {reason}", reply_s=reply_s)
            save()
            for name, result in rollout.withdrawn.items():
                print(f"rollout {rollout.model}: withdrawn from {name}: {result}", file=log)
            return "aborted"
        if decision == "pause":
            rollout.status = "paused"
            rollout.note(group, "pause", "failure share above the pause line", log)
            save()
            return "paused"
        rollout.note(group, "continue", "within the abort and pause lines", log)
        save()
    rollout.status = "done"
    save()
    return "done"


def report(rollout: Rollout) -> dict[str, Any]:
    """What the loop's report keeps of a rollout."""
    return {
        "status": rollout.status,
        "model": rollout.model,
        "policy": asdict(rollout.policy),
        "groups": [
            {
                "name": g.name,
                "offered": g.offered_at is not None,
                "verdicts": {t: asdict(s) for t, s in g.state.items()},
            }
            for g in rollout.groups
        ],
        "decisions": rollout.decisions,
        "withdrawn": rollout.withdrawn,
    }
