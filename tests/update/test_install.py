"""Staging, transfer, atomic install, the active pointer, rollback protection and crash recovery,
on a real disk with real model files (the model store and onnxruntime read the result)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.update.helpers import Keys, offer_for, tiny_model
from vehicle_agent.enhance.store import ModelStore
from vehicle_agent.update.install import ModelInstaller
from vehicle_agent.update.manifest import SignedUpdate, UpdateManifest, UpdateRefusedError
from vehicle_agent.update.transfer import ChunkError, Transfer, split


@pytest.fixture
def keys() -> Keys:
    return Keys()


@pytest.fixture
def shipped(tmp_path: Path) -> Path:
    """A 'shipped' models folder holding tiny@1.0.0."""
    root = tmp_path / "shipped"
    tiny_model(root, "1.0.0")
    return root


def store(installer: ModelInstaller, shipped: Path) -> ModelStore:
    return ModelStore([installer.root, shipped])


def transfer_all(installer: ModelInstaller, offer: SignedUpdate, model: Path) -> Transfer:
    manifest = UpdateManifest.model_validate(offer.manifest)
    transfer = Transfer(installer.stage_offer(offer), manifest)
    for i, chunk in enumerate(split((model / "model.onnx").read_bytes(), manifest.chunk_size)):
        transfer.add(i, chunk)
    return transfer


def install(
    installer: ModelInstaller, offer: SignedUpdate, model: Path
) -> tuple[UpdateManifest, Path]:
    manifest = UpdateManifest.model_validate(offer.manifest)
    assembled = transfer_all(installer, offer, model).assemble()
    return manifest, installer.install(offer, manifest, assembled)


def test_a_transfer_resumes_from_what_staging_holds_and_takes_no_more_than_the_manifest(
    tmp_path: Path, keys: Keys, shipped: Path
) -> None:
    installer = ModelInstaller(tmp_path / "state" / "models")
    model = tiny_model(tmp_path / "src", "1.0.1", "other")
    offer = offer_for(model, keys.new, chunk_size=1024)
    manifest = UpdateManifest.model_validate(offer.manifest)
    chunks = split((model / "model.onnx").read_bytes(), 1024)
    assert len(chunks) == manifest.chunks >= 2
    staging = installer.stage_offer(offer)
    first = Transfer(staging, manifest)
    assert first.add(0, chunks[0])
    assert not first.add(0, chunks[0])  # a redelivery is not stored twice
    (first.directory / "1.tmp-999").write_bytes(b"half")  # a write cut by kill -9
    # "Restart": a new Transfer on the same staging knows chunk 0 and dropped the half write.
    again = Transfer(staging, manifest)
    assert again.have == {0}
    assert again.received_bytes == 1024
    with pytest.raises(ChunkError, match="out of range"):
        again.add(manifest.chunks, b"x" * 1024)
    with pytest.raises(ChunkError, match="expected"):
        again.add(1, chunks[1] + b"more")
    for i, chunk in enumerate(chunks):
        again.add(i, chunk)
    assert again.complete
    assert again.assemble().stat().st_size == manifest.size
    assert installer.offer_outcome(offer.update_id) is None
    assert [o.update_id for o in installer.staged_offers()] == [offer.update_id]


def test_a_hash_mismatch_is_refused_and_the_chunks_dropped(
    tmp_path: Path, keys: Keys, shipped: Path
) -> None:
    installer = ModelInstaller(tmp_path / "models")
    model = tiny_model(tmp_path / "src", "1.0.1", "other")
    offer = offer_for(model, keys.new)
    manifest = UpdateManifest.model_validate(offer.manifest)
    transfer = Transfer(installer.stage_offer(offer), manifest)
    data = bytearray((model / "model.onnx").read_bytes())
    data[10] ^= 0xFF
    for i, chunk in enumerate(split(bytes(data), manifest.chunk_size)):
        transfer.add(i, chunk)
    with pytest.raises(UpdateRefusedError) as info:
        transfer.assemble()
    assert info.value.reason == "hash_mismatch"
    assert not transfer.have
    assert not list(transfer.directory.iterdir())
    assert installer.active_version("tiny") is None


def test_install_activate_confirm_and_rollback_protection(
    tmp_path: Path, keys: Keys, shipped: Path
) -> None:
    installer = ModelInstaller(tmp_path / "models")
    running = store(installer, shipped)
    assert running.resolve("tiny").label == "tiny@1.0.0"
    v101 = tiny_model(tmp_path / "a", "1.0.1", "other")
    offer = offer_for(v101, keys.new)
    manifest, directory = install(installer, offer, v101)
    # Installed, not active: the shipped model still runs.
    assert directory.is_dir()
    assert running.resolve("tiny").label == "tiny@1.0.0"
    assert installer.activate(manifest) is None
    assert installer.active_version("tiny") == "1.0.1"
    assert running.resolve("tiny").label == "tiny@1.0.1"
    assert installer.trial("tiny") is not None
    assert installer.confirm("tiny") == "1.0.1"
    assert installer.trial("tiny") is None
    # Version checks: not newer than what runs, and it survives a new installer (restart).
    again = ModelInstaller(installer.root)
    for version in ("1.0.1", "1.0.0", "0.9"):
        m = UpdateManifest.model_validate(offer_for(v101, keys.new, version=version).manifest)
        with pytest.raises(UpdateRefusedError) as info:
            again.check_version(m, running.find("tiny")[1].version)
        assert info.value.reason == "not_newer"
    m = UpdateManifest.model_validate(offer_for(v101, keys.new, version="1.0.2").manifest)
    again.check_version(m, "1.0.1")


def test_rollback_restores_the_previous_version_and_marks_the_bad_one(
    tmp_path: Path, keys: Keys, shipped: Path
) -> None:
    installer = ModelInstaller(tmp_path / "models")
    running = store(installer, shipped)
    for version, kind in (("1.0.1", "other"), ("1.0.2", "good")):
        model = tiny_model(tmp_path / version, version, kind)
        manifest, _ = install(installer, offer_for(model, keys.new), model)
        installer.activate(manifest)
    assert running.resolve("tiny").label == "tiny@1.0.2"
    assert installer.rollback("tiny", "1.0.2", "test") == "1.0.1"
    assert running.resolve("tiny").label == "tiny@1.0.1"
    assert not installer.version_dir("tiny", "1.0.2").exists()
    bad = UpdateManifest.model_validate(offer_for(tmp_path / "1.0.2" / "tiny", keys.new).manifest)
    with pytest.raises(UpdateRefusedError) as info:
        installer.check_version(bad, "1.0.1")
    assert info.value.reason == "bad_version"


def test_a_crash_loop_after_the_swap_rolls_back_but_clean_stops_do_not_count(
    tmp_path: Path, keys: Keys, shipped: Path
) -> None:
    installer = ModelInstaller(tmp_path / "models")
    running = store(installer, shipped)
    model = tiny_model(tmp_path / "src", "1.0.1", "other")
    manifest, _ = install(installer, offer_for(model, keys.new), model)
    installer.activate(manifest)
    # The process that swapped stops cleanly twice: no crash counted.
    for _ in range(2):
        installer.mark_clean_exit()
        assert ModelInstaller(installer.root).recover(max_crashes=2) == []
    assert installer.trial("tiny")["crashes"] == 0  # type: ignore[index]
    # Then it dies twice without a clean stop: the second start rolls back to the shipped model.
    assert ModelInstaller(installer.root).recover(max_crashes=2) == []
    reports = ModelInstaller(installer.root).recover(max_crashes=2)
    assert [r.type for r in reports] == ["model_rolled_back"]
    assert reports[0].data["stage"] == "crash_loop"
    assert installer.active_version("tiny") is None
    assert running.resolve("tiny").label == "tiny@1.0.0"
    assert [r.type for r in installer.take_reports()] == ["model_rolled_back"]
    assert installer.take_reports() == []


def test_recover_removes_leftovers_and_ends_a_trial_whose_swap_never_happened(
    tmp_path: Path, keys: Keys, shipped: Path
) -> None:
    installer = ModelInstaller(tmp_path / "models")
    model = tiny_model(tmp_path / "src", "1.0.1", "other")
    manifest, directory = install(installer, offer_for(model, keys.new), model)
    (installer.root / ".tiny.tmp-1234").symlink_to(directory)
    (installer.root / ".ledger.json.tmp-77").write_text("{")
    installer.activate(manifest)
    installer._point("tiny", None)  # as if killed between the trial record and the swap
    ModelInstaller(installer.root).recover(max_crashes=3)
    assert installer.trial("tiny") is None
    assert not list(installer.root.rglob("*.tmp-*"))
    assert not directory.exists()  # an installed version nothing points to


def test_the_daemon_rolls_back_a_crash_looping_update_before_it_loads_a_model(
    tmp_path: Path, keys: Keys, shipped: Path
) -> None:
    from vehicle_agent.app import build_parts  # noqa: PLC0415
    from vehicle_agent.config import parse_config  # noqa: PLC0415

    config = parse_config(
        {
            "agent": {"state_dir": str(tmp_path / "state")},
            "enhance": {"model": "tiny", "model_dirs": [str(shipped)]},
            "update": {"max_crashes": 1},
        }
    )
    installer = ModelInstaller(config.agent.state_dir / "models")
    model = tiny_model(tmp_path / "src", "1.0.1", "other")
    manifest, _ = install(installer, offer_for(model, keys.new), model)
    installer.activate(manifest)  # ... and the daemon that swapped died without a clean stop
    parts = build_parts(config)
    try:
        parts.enhancer.load()
        assert parts.enhancer.model_label == "tiny@1.0.0"
    finally:
        parts.enhancer.close()
        for close in parts.closers:
            close()
    assert installer.active_version("tiny") is None
    reports = installer.take_reports()
    assert [(r.type, r.data["stage"]) for r in reports] == [("model_rolled_back", "crash_loop")]


def test_recover_finishes_a_rollback_cut_short_after_marking_the_version_bad(
    tmp_path: Path, keys: Keys, shipped: Path
) -> None:
    installer = ModelInstaller(tmp_path / "models")
    model = tiny_model(tmp_path / "src", "1.0.1", "other")
    manifest, _ = install(installer, offer_for(model, keys.new), model)
    installer.activate(manifest)
    installer.mark_bad("tiny", "1.0.1")  # step 1 of a rollback, then kill -9
    reports = ModelInstaller(installer.root).recover(max_crashes=3)
    assert [r.data["stage"] for r in reports] == ["swap"]
    assert installer.active_version("tiny") is None
    assert installer.trial("tiny") is None
    assert store(installer, shipped).resolve("tiny").label == "tiny@1.0.0"


def test_staging_leftovers_of_a_cut_cleanup_are_removed_at_start(
    tmp_path: Path, keys: Keys
) -> None:
    """A kill -9 during a staging cleanup left an empty folder that survived 10 restarts; now
    recovery removes folders without their offer, folders of offers already handled and stray
    files, and keeps a transfer that can resume and the outcomes."""
    installer = ModelInstaller(tmp_path / "state" / "models")
    model = tiny_model(tmp_path / "src", "1.0.1", "other")
    resumable = offer_for(model, keys.new)
    handled = offer_for(model, keys.new, version="1.0.2")
    installer.stage_offer(resumable)
    installer.stage_offer(handled)
    assert handled.update_id != resumable.update_id
    installer.remember_offer(handled.update_id, "refused:bad_chunk")
    (installer.staging_root / "0123456789abcdef").mkdir()  # emptied, then cut
    partial = installer.staging_root / "fedcba9876543210" / "chunks"
    partial.mkdir(parents=True)
    (partial / "3").write_bytes(b"x" * 1024)  # offer.json went first, the chunks did not
    (installer.staging_root / "stray").write_bytes(b"?")
    installer.recover(max_crashes=3)
    assert sorted(p.name for p in installer.staging_root.iterdir()) == sorted(
        ["outcomes.json", resumable.update_id]
    )
    assert [o.update_id for o in installer.staged_offers()] == [resumable.update_id]
    assert installer.offer_outcome(handled.update_id) == "refused:bad_chunk"
    assert installer.clean_staging() == []  # nothing left to remove
