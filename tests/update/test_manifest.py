"""The signed update manifest: what a vehicle accepts, and each refusal with its reason code."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from tests.update.helpers import Keys, offer_for, resign, tiny_model
from vehicle_agent.update.manifest import (
    SignedUpdate,
    UpdateManifest,
    UpdateRefusedError,
    canonical_json,
    decode_public_key,
    parse_offer,
    verify_offer,
)


@pytest.fixture
def keys() -> Keys:
    return Keys()


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return tiny_model(tmp_path / "src", "1.0.0")


def check(offer: SignedUpdate, keys: Keys, **kw: object) -> UpdateManifest:
    trusted = {k: decode_public_key(v) for k, v in keys.trusted().items()}
    args: dict[str, object] = {
        "device": "linux-x86_64",
        "backends": {"onnxruntime"},
        "max_size": 1 << 20,
        "max_chunk": 1 << 16,
    }
    args.update(kw)
    return verify_offer(offer, trusted, **args)  # type: ignore[arg-type]


def refused(offer: SignedUpdate, keys: Keys, **kw: object) -> str:
    with pytest.raises(UpdateRefusedError) as info:
        check(offer, keys, **kw)
    assert info.value.detail
    return info.value.reason


def test_a_signed_offer_verifies_with_either_trusted_key(keys: Keys, model: Path) -> None:
    for key, key_id in ((keys.old, "fleet-old"), (keys.new, "fleet-new")):
        manifest = check(offer_for(model, key, key_id, version="1.0.1"), keys)
        assert manifest.label == "tiny@1.0.1"
        assert manifest.model_manifest().version == "1.0.1"
        assert manifest.chunks == -(-manifest.size // 1024)


def test_the_signature_covers_canonical_json_so_key_order_does_not_matter(
    keys: Keys, model: Path
) -> None:
    offer = offer_for(model, keys.new)
    shuffled = json.dumps(
        {"signature": offer.signature, "key_id": offer.key_id, "manifest": offer.manifest},
        indent=3,
    ).encode()
    again = parse_offer(shuffled)
    assert again.update_id == offer.update_id
    check(again, keys)
    assert canonical_json({"b": 1, "a": [1, "é"]}) == '{"a":[1,"é"],"b":1}'.encode()


def test_unsigned_offers_are_refused(keys: Keys, model: Path) -> None:
    offer = offer_for(model, keys.new)
    assert refused(SignedUpdate(manifest=offer.manifest), keys) == "unsigned"
    no_id = SignedUpdate(manifest=offer.manifest, signature=offer.signature)
    assert refused(no_id, keys) == "unsigned"


def test_a_key_the_vehicle_does_not_trust_is_refused(keys: Keys, model: Path) -> None:
    assert refused(offer_for(model, keys.stranger, "fleet-new"), keys) == "bad_signature"
    assert refused(offer_for(model, keys.stranger, "someone"), keys) == "unknown_key"


def test_an_altered_manifest_fails_its_signature(keys: Keys, model: Path) -> None:
    offer = offer_for(model, keys.new)
    altered = SignedUpdate(
        manifest={**offer.manifest, "size": offer.manifest["size"] + 1},
        key_id=offer.key_id,
        signature=offer.signature,
    )
    assert refused(altered, keys) == "bad_signature"
    garbage = SignedUpdate(manifest=offer.manifest, key_id="fleet-new", signature="!!notb64")
    assert refused(garbage, keys) == "bad_signature"


def test_expired_incompatible_and_oversize_offers_are_refused(keys: Keys, model: Path) -> None:
    offer = offer_for(model, keys.new)
    expired = resign(offer, keys.new, "fleet-new", expires_at=1)
    assert refused(expired, keys) == "expired"
    other_device = resign(offer, keys.new, "fleet-new", devices=["jetson-orin"])
    assert refused(other_device, keys) == "incompatible"
    assert check(other_device, keys, device="jetson-orin").name == "tiny"
    trt_only = resign(offer, keys.new, "fleet-new", backends=["tensorrt"])
    assert refused(trt_only, keys) == "incompatible"
    assert refused(offer, keys, max_size=100) == "oversize"
    assert refused(offer_for(model, keys.new, chunk_size=65536), keys, max_chunk=4096) == "oversize"


def test_malformed_offers_name_the_field(keys: Keys, model: Path) -> None:
    with pytest.raises(UpdateRefusedError) as info:
        parse_offer(b"not json")
    assert info.value.reason == "malformed"
    offer = offer_for(model, keys.new)
    body = {**offer.manifest, "chunk_size": 1}
    signature = base64.b64encode(keys.new.sign(canonical_json(body))).decode()
    bad = SignedUpdate(manifest=body, key_id="fleet-new", signature=signature)
    assert refused(bad, keys) == "malformed"
    with pytest.raises(UpdateRefusedError, match="chunk_size"):
        check(bad, keys)
    with pytest.raises(ValueError, match=r"model\.version"):
        UpdateManifest.model_validate({**offer.manifest, "version": "9.9.9"})
