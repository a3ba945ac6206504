"""Staged rollouts (tools/rollout.py) through the real broker with real vehicle uplinks: a canary
that rolls back aborts before the next wave, an abort withdraws the update from a vehicle that
took it, a rollout killed between groups resumes from its state file; and the vehicle's side of
`withdraw_update` (running, confirmed, never seen)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tests.update.helpers import Keys, offer_for, tiny_model
from tests.uplink.broker import OPERATOR, Broker, Certs
from tests.uplink.conftest import PASSWORDS
from tests.uplink.helpers import OPERATOR_CREDENTIAL, Recorder, operator_cli, wait_for
from tests.uplink.test_model_updates import has, publish_chunks, publish_offer, running, started
from tests.uplink.test_model_updates import update_config as base_config
from tools import model_update, rollout
from tools.fleet import FleetClient
from vehicle_agent.config import Config
from vehicle_agent.secrets import env_name
from vehicle_agent.update.manifest import SignedUpdate
from vehicle_agent.uplink.mqtt import MqttUplink

pytestmark = pytest.mark.usefixtures("vehicle_password")

FAST = rollout.Policy(health_s=1.0, timeout_s=20.0, abort_share=0.2, abort_min=1)


def vehicle_config(
    broker: Broker, certs: Certs, tmp_path: Path, keys: Keys, vehicle: str, **update: Any
) -> Config:
    config = base_config(broker, certs, tmp_path / vehicle, keys, **update)
    agent = config.agent.model_copy(update={"vehicle_id": vehicle})
    link = config.uplink.model_copy(
        update={"username": vehicle}
        | ({"password_credential": "veh2-password"} if vehicle == "veh-2" else {})
    )
    return config.model_copy(update={"agent": agent, "uplink": link})


async def fleet_of(
    broker: Broker,
    certs: Certs,
    tmp_path: Path,
    keys: Keys,
    monkeypatch: pytest.MonkeyPatch,
    *,
    devices: dict[str, str] | None = None,
) -> dict[str, tuple[MqttUplink, Recorder, Config]]:
    monkeypatch.setenv(env_name("veh2-password"), PASSWORDS["veh-2"])
    vehicles = {}
    for vehicle in ("veh-1", "veh-2"):
        device = (devices or {}).get(vehicle, "test-device")
        config = vehicle_config(broker, certs, tmp_path, keys, vehicle, device=device)
        uplink, recorder = await started(config)
        vehicles[vehicle] = (uplink, recorder, config)
    return vehicles


async def close(vehicles: dict[str, tuple[MqttUplink, Recorder, Config]]) -> None:
    for uplink, _, _ in vehicles.values():
        await uplink.close()


def plan(
    tmp_path: Path, offer: SignedUpdate, model: Path, groups: list[tuple[str, list[str]]]
) -> rollout.Rollout:
    offer_file = tmp_path / "offer.json"
    offer_file.write_bytes(offer.to_bytes())
    return rollout.Rollout.plan(offer, offer_file, model / "model.onnx", groups, FAST)


async def test_a_healthy_update_goes_canary_then_wave_and_each_vehicle_runs_it(
    broker: Broker,
    certs: Certs,
    tmp_path: Path,
    operator: FleetClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keys = Keys()
    vehicles = await fleet_of(broker, certs, tmp_path, keys, monkeypatch)
    model = tiny_model(tmp_path / "src", "1.0.1", "other")
    offer = offer_for(model, keys.new)
    state = tmp_path / "rollout.json"
    try:
        staged = plan(tmp_path, offer, model, [("canary", ["veh-1"]), ("wave 1", ["veh-2"])])
        status = await rollout.run(operator, staged, offer, model / "model.onnx", state)
    finally:
        await close(vehicles)
    assert status == "done"
    saved = rollout.Rollout.load(state)
    assert saved.status == "done"
    assert [d["decision"] for d in saved.decisions] == ["continue", "continue"]
    for group in saved.groups:
        assert all(s.verdict == "healthy" for s in group.state.values()), group.state
    for _, _, config in vehicles.values():
        assert running(config) == "tiny@1.0.1"
    # The canary was judged before the wave was offered.
    canary_took = saved.groups[0].state["veh-1"].took_at
    assert canary_took is not None
    assert saved.groups[1].offered_at is not None
    assert saved.groups[1].offered_at >= canary_took + FAST.health_s


async def test_a_canary_that_rolls_back_aborts_before_the_next_wave_is_offered(
    broker: Broker,
    certs: Certs,
    tmp_path: Path,
    operator: FleetClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keys = Keys()
    vehicles = await fleet_of(broker, certs, tmp_path, keys, monkeypatch)
    model = tiny_model(tmp_path / "src", "1.0.1", "nan")  # fails the health check
    offer = offer_for(model, keys.new)
    state = tmp_path / "rollout.json"
    try:
        staged = plan(tmp_path, offer, model, [("canary", ["veh-1"]), ("wave 1", ["veh-2"])])
        status = await rollout.run(operator, staged, offer, model / "model.onnx", state, reply_s=10)
        await asyncio.sleep(1.0)  # anything offered to veh-2 would have arrived by now
    finally:
        await close(vehicles)
    assert status == "aborted"
    saved = rollout.Rollout.load(state)
    assert saved.status == "aborted"
    assert saved.groups[1].offered_at is None
    assert [d["decision"] for d in saved.decisions] == ["abort"]
    assert "rolled back (health_check)" in saved.decisions[0]["reason"]
    assert saved.withdrawn["veh-1"]["ok"] is True
    assert saved.withdrawn["veh-1"]["action"] == "marked_bad"
    assert not vehicles["veh-2"][1].of("model_update_offered")
    assert running(vehicles["veh-2"][2]) == "tiny@1.0.0"
    # Resuming an aborted rollout does nothing more.
    assert await rollout.run(operator, saved, offer, model / "model.onnx", state) == "aborted"


async def test_an_abort_withdraws_the_update_from_a_vehicle_that_took_it(
    broker: Broker,
    certs: Certs,
    tmp_path: Path,
    operator: FleetClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keys = Keys()
    vehicles = await fleet_of(
        broker, certs, tmp_path, keys, monkeypatch, devices={"veh-2": "other-kind"}
    )
    model = tiny_model(tmp_path / "src", "1.0.1", "other")
    offer = model_update.make_offer(
        model, keys.new, "fleet-new", devices=["test-device"], chunk_size=1024
    )
    state = tmp_path / "rollout.json"
    try:
        staged = plan(tmp_path, offer, model, [("canary", ["veh-1", "veh-2"])])
        status = await rollout.run(operator, staged, offer, model / "model.onnx", state, reply_s=10)
        recorder = vehicles["veh-1"][1]
        await wait_for(has(recorder, "model_rolled_back", stage="withdrawn"), 10, "withdrawal")
    finally:
        await close(vehicles)
    assert status == "aborted"
    saved = rollout.Rollout.load(state)
    verdicts = saved.groups[0].state
    assert verdicts["veh-2"].verdict == "failed"
    assert verdicts["veh-2"].detail == "refused: incompatible"
    assert saved.withdrawn["veh-1"]["action"] == "rolled_back"
    assert saved.withdrawn["veh-1"]["running"] == "tiny@1.0.0"
    assert running(vehicles["veh-1"][2]) == "tiny@1.0.0"
    rolled = vehicles["veh-1"][1].of("model_rolled_back")[0].data
    assert rolled["model"] == "tiny@1.0.1"
    assert rolled["restored"] == "tiny@1.0.0"


async def test_a_rollout_killed_between_groups_resumes_from_its_state_file(
    broker: Broker,
    certs: Certs,
    tmp_path: Path,
    operator: FleetClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keys = Keys()
    vehicles = await fleet_of(broker, certs, tmp_path, keys, monkeypatch)
    model = tiny_model(tmp_path / "src", "1.0.1", "other")
    offer = offer_for(model, keys.new)
    state = tmp_path / "rollout.json"
    slow = rollout.Policy(health_s=1.0, timeout_s=20.0)
    try:
        staged = rollout.Rollout.plan(
            offer,
            tmp_path / "offer.json",
            model / "model.onnx",
            [("canary", ["veh-1"]), ("wave 1", ["veh-2"])],
            slow,
        )
        task = asyncio.create_task(
            rollout.run(operator, staged, offer, model / "model.onnx", state)
        )

        def wave_offered() -> bool:
            return state.exists() and rollout.Rollout.load(state).groups[1].offered_at is not None

        await wait_for(wave_offered, 20, "the wave offered")
        task.cancel()  # the tool is killed once the canary is judged and the wave is offered
        with pytest.raises(asyncio.CancelledError):
            await task
        resumed = rollout.Rollout.load(state)
        assert resumed.groups[0].judged
        assert not resumed.groups[1].judged
        assert await rollout.run(operator, resumed, offer, model / "model.onnx", state) == "done"
    finally:
        await close(vehicles)
    saved = rollout.Rollout.load(state)
    assert [d["group"] for d in saved.decisions] == ["canary", "wave 1"]
    assert all(s.verdict == "healthy" for g in saved.groups for s in g.state.values())
    assert len(vehicles["veh-1"][1].of("model_update_installed")) == 1
    assert running(vehicles["veh-2"][2]) == "tiny@1.0.1"


async def test_withdraw_update_rolls_back_a_confirmed_version_to_the_one_before_it(
    broker: Broker, certs: Certs, tmp_path: Path, operator: FleetClient
) -> None:
    keys = Keys()
    config = base_config(broker, certs, tmp_path, keys, confirm_after_s=0.2)
    uplink, recorder = await started(config)
    try:
        for version in ("1.0.1", "1.0.2"):
            model = tiny_model(tmp_path / version, version, "other")
            offer = offer_for(model, keys.new)
            await publish_chunks(operator, offer, (model / "model.onnx").read_bytes())
            await publish_offer(operator, offer)
            await wait_for(
                has(recorder, "model_update_confirmed", model=f"tiny@{version}"), 15, "confirmed"
            )
        reply = await operator.send("veh-1", "withdraw_update", {"model": "tiny@1.0.2"})
        assert reply.ok, reply
        assert reply.result == {
            "model": "tiny@1.0.2",
            "action": "rolled_back",
            "running": "tiny@1.0.1",
        }
        assert running(config) == "tiny@1.0.1"
        rolled = recorder.of("model_rolled_back")[-1].data
        assert rolled["stage"] == "withdrawn"
        assert rolled["restored"] == "tiny@1.0.1"
        # Never seen here: marked bad, so a later offer of it is refused.
        reply = await operator.send("veh-1", "withdraw_update", {"model": "tiny@1.0.3"})
        assert reply.ok
        assert reply.result is not None
        assert reply.result["action"] == "marked_bad"
        model = tiny_model(tmp_path / "1.0.3", "1.0.3", "other")
        offer = offer_for(model, keys.new)
        await publish_offer(operator, offer)
        await wait_for(has(recorder, "model_update_refused", model="tiny@1.0.3"), 10, "refusal")
        assert recorder.of("model_update_refused")[-1].data["reason"] == "bad_version"
        bad = await operator.send("veh-1", "withdraw_update", {"model": "no version"})
        assert not bad.ok
        assert bad.error is not None
        assert bad.error.code == "invalid_args"
    finally:
        await uplink.close()


async def test_the_command_line_runs_a_rollout_and_refuses_to_start_one_over_its_state(
    broker: Broker,
    certs: Certs,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    keys = Keys()
    monkeypatch.setenv(env_name(OPERATOR_CREDENTIAL), PASSWORDS[OPERATOR])
    vehicles = await fleet_of(broker, certs, tmp_path, keys, monkeypatch)
    model = tiny_model(tmp_path / "src", "1.0.1", "other")
    offer_file = tmp_path / "offer.json"
    offer_file.write_bytes(offer_for(model, keys.new).to_bytes())
    state = tmp_path / "state" / "rollout.json"
    cli = [*operator_cli(broker, certs), "rollout"]
    start = [str(offer_file), str(model), "--state", str(state), "--health", "1"]
    try:
        code = await asyncio.to_thread(
            model_update.main, [*cli, *start, "--canary", "veh-1", "--wave", "veh-2"]
        )
        printed = json.loads(capsys.readouterr().out)
        again = await asyncio.to_thread(model_update.main, [*cli, *start, "--canary", "veh-1"])
        refused = capsys.readouterr().err
        resumed = await asyncio.to_thread(model_update.main, [*cli, "--state", str(state)])
        resumed_err = capsys.readouterr().err
    finally:
        await close(vehicles)
    assert code == 0, printed
    assert printed["status"] == "done"
    assert [g["name"] for g in printed["groups"]] == ["canary", "wave 1"]
    assert again == 1
    assert "exists: resume with --state alone" in refused
    assert resumed == 0
    assert "already done" in resumed_err
    missing = tmp_path / "none.json"
    assert await asyncio.to_thread(model_update.main, [*cli, "--state", str(missing)]) == 1
    assert "give OFFER and MODEL" in capsys.readouterr().err


# -- the decisions, without a broker -------------------------------------------------------------


def verdict(state: rollout.TargetState) -> str:
    return state.verdict


def group_of(*verdicts: rollout.Verdict) -> rollout.Group:
    targets = [f"veh-{i}" for i in range(len(verdicts))]
    states = {t: rollout.TargetState(v) for t, v in zip(targets, verdicts, strict=True)}
    return rollout.Group("wave", targets, offered_at=0.0, state=states)


def test_the_abort_line_needs_both_the_share_and_the_minimum_count() -> None:
    policy = rollout.Policy(abort_share=0.2, abort_min=2, pause_share=0.05)
    staged = rollout.Rollout("id", "m@1", "o", "f", policy, [])
    # 1 of 4 failed: above the share, below the count; once all are in, above the pause line.
    group = group_of("failed", "healthy", "took", "waiting")
    assert staged.decide(group, final=False) is None
    group.state["veh-2"].verdict = group.state["veh-3"].verdict = "healthy"
    assert staged.decide(group, final=True) == "pause"
    # 2 of 4: both lines passed, decided before the others are in.
    assert staged.decide(group_of("failed", "failed", "waiting", "took"), final=False) == "abort"
    healthy: list[rollout.Verdict] = ["healthy"] * 20
    assert staged.decide(group_of(*healthy), final=True) is None


def test_a_restart_or_a_demotion_after_the_swap_fails_the_vehicle_and_time_makes_it_healthy() -> (
    None
):
    label = "tiny@1.0.1"
    state = rollout.TargetState()
    rollout.judge(state, "model_swapped", {"model": label, "current": label}, label, 10.0)
    assert state.verdict == "took"
    rollout.judge(state, "telemetry", {"model": label, "uptime_s": 50.0}, label, 11.0)
    rollout.judge(state, "telemetry", {"model": label, "uptime_s": 3.0}, label, 12.0)
    assert verdict(state) == "failed"  # (through a function: mypy keeps the narrowing above)
    assert "restarted" in state.detail
    demoted = rollout.TargetState()
    rollout.judge(demoted, "model_update_installed", {"model": label}, label, 1.0)
    rollout.judge(demoted, "enhancer_demoted", {"model": "tiny", "kind": "slow"}, label, 2.0)
    assert demoted.verdict == "failed"
    assert "slow" in demoted.detail
    group = rollout.Group("g", ["a", "b"], offered_at=0.0)
    group.state = {"a": rollout.TargetState("took", took_at=5.0), "b": rollout.TargetState()}
    rollout.tick(group, rollout.Policy(health_s=10.0, timeout_s=30.0), 16.0)
    assert group.state["a"].verdict == "healthy"
    assert group.state["b"].verdict == "waiting"
    rollout.tick(group, rollout.Policy(timeout_s=30.0, timeouts_fail=False), 31.0)
    assert verdict(group.state["b"]) == "timeout"


def test_the_state_file_round_trips_and_a_bad_one_is_refused(tmp_path: Path) -> None:
    group = group_of("healthy", "failed")
    staged = rollout.Rollout("id", "m@1", "o", "f", rollout.Policy(), [group], "paused")
    path = tmp_path / "state.json"
    staged.save(path)
    assert rollout.Rollout.load(path) == staged
    path.write_text(json.dumps({"v": 99}))
    with pytest.raises(rollout.RolloutError, match="state version 99"):
        rollout.Rollout.load(path)
    path.write_text("{")
    with pytest.raises(rollout.RolloutError, match="not a rollout state file"):
        rollout.Rollout.load(path)
    with pytest.raises(rollout.RolloutError, match="two groups"):
        rollout.Rollout.plan(
            offer_for(tiny_model(tmp_path / "m"), Keys().new),
            path,
            path,
            [("a", ["veh-1"]), ("b", ["veh-1"])],
            rollout.Policy(),
        )
