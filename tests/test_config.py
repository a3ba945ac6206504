"""Config: closed and bounded, described, errors that name the file and key, no secrets in files."""

from __future__ import annotations

import subprocess
import sys
import types
import typing
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
from pydantic import BaseModel

from vehicle_agent.cli import main
from vehicle_agent.config import Config, ConfigError, ConfigModel, load_config, parse_config

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "systemd" / "vehicle-agent.toml"


def all_models() -> list[type[BaseModel]]:
    seen: list[type[BaseModel]] = []
    stack: list[type[BaseModel]] = [Config]
    while stack:
        model = stack.pop()
        if model in seen:
            continue
        seen.append(model)
        for info in model.model_fields.values():
            stack.extend(_models(info.annotation))
    return seen


def _models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in get_args(annotation) for m in _models(a)]


def _is_number(annotation: Any) -> bool:
    if annotation in (int, float):
        return True
    if get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_is_number(a) for a in get_args(annotation))
    return False


def test_example_config_is_valid() -> None:
    config = load_config(EXAMPLE)
    assert config.capture.uri == "csi://0"
    assert main(["check-config", str(EXAMPLE)]) == 0


def test_every_field_is_described_and_every_number_bounded() -> None:
    for model in all_models():
        assert issubclass(model, ConfigModel), model
        assert model.model_config.get("extra") == "forbid", model
        for name, info in model.model_fields.items():
            assert info.description, f"{model.__name__}.{name} has no description"
            if _is_number(info.annotation):
                bounds = {
                    attr
                    for meta in info.metadata
                    for attr in ("ge", "gt", "le", "lt")
                    if getattr(meta, attr, None) is not None
                }
                assert bounds & {"ge", "gt"}, f"{model.__name__}.{name} has no lower bound"
                assert bounds & {"le", "lt"}, f"{model.__name__}.{name} has no upper bound"


@pytest.mark.parametrize(
    ("toml", "key", "words"),
    [
        ("[capture]\nurl = 'x'\n", "capture.url", "unknown key"),
        ("[pipeline]\nqueue_size = 1000\n", "pipeline.queue_size", "less than or equal to 64"),
        ("[capture.reconnect]\ninitial_s = -1\n", "capture.reconnect.initial_s", "greater"),
        (
            "[enhance.backend]\ntype = 'classical'\nclip_limit = 99\n",
            "enhance.backend.clip_limit",
            "40",
        ),
        ("[enhance.backend]\ntype = 'magic'\n", "enhance.backend", "'magic'"),
        ("[agent]\nvehicle_id = 'has space'\n", "agent.vehicle_id", "pattern"),
        ("[uplink]\npassword = 'hunter2'\n", "uplink.password", "secrets never sit"),
        ("[capture]\nfps = nan\n", "capture.fps", "finite number"),
        ("colour = 'red'\n", "colour", "unknown key"),
    ],
)
def test_errors_name_the_file_and_key(tmp_path: Path, toml: str, key: str, words: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == key
    assert info.value.path == str(path)
    assert words in str(info.value)
    assert "hunter2" not in str(info.value)


def test_check_config_cli_exits_non_zero_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[pipeline]\nqueue_size = 0\n")
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(path) in err
    assert "pipeline.queue_size" in err


def test_invalid_toml_and_missing_file_are_named(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[capture\nuri = 1\n")
    with pytest.raises(ConfigError, match=r"broken\.toml: invalid TOML"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"nope\.toml: no such file"):
        load_config(tmp_path / "nope.toml")


def test_credential_names_are_allowed_where_a_model_defines_them() -> None:
    # The secret check only refuses literal secrets; a *_credential key is a name, not a secret
    # (unknown here because no section defines one yet, so it is refused as an unknown key).
    with pytest.raises(ConfigError, match="unknown key"):
        parse_config({"uplink": {"type": "none", "password_credential": "mqtt-password"}})


def test_digest_changes_with_the_config() -> None:
    assert Config().digest() == Config().digest()
    other = parse_config({"pipeline": {"queue_size": 8}})
    assert other.digest() != Config().digest()


@pytest.mark.parametrize(
    ("toml", "key", "words"),
    [
        ('[capture]\nuri = "ftp://foo"\n', "capture.uri", "unknown scheme 'ftp'"),
        ('[capture]\nuri = "v4l2://video0"\n', "capture.uri", "v4l2:///dev/videoN"),
        (
            '[uplink]\ntype = "mqtt"\nbroker = "mqtts://h"\nca_file = "/nonexistent/ca.pem"\n',
            "uplink.ca_file",
            "no such file: /nonexistent/ca.pem",
        ),
        ('[enhance]\nmodel_dirs = ["/nonexistent/models"]\n', "enhance.model_dirs[0]", "folder"),
        (
            '[uplink]\ntype = "mqtt"\nbroker = "mqtt://h"\nkeepalive_s = "30"\n',
            "uplink.keepalive_s",
            "valid integer (got '30')",
        ),
        ('[capture]\nfps = "30"\n', "capture.fps", "valid number"),
        ("[pipeline]\nqueue_size = 4.0\n", "pipeline.queue_size", "valid integer"),
        ("[quality]\nenabled = 1\n", "quality.enabled", "valid boolean"),
        ("[agent]\nvehicle_id = 7\n", "agent.vehicle_id", "valid string"),
        ("[agent]\nvehicle_id = 1979-05-27\n", "agent.vehicle_id", "dates and times"),
        (
            '[uplink]\ntype = "mqtt"\nbroker = "http://h"\n',
            "uplink.broker",
            "mqtts://HOST[:PORT] or mqtt://HOST[:PORT]",
        ),
    ],
)
def test_check_config_refuses_what_run_could_not_start_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], toml: str, key: str, words: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == key
    assert words in str(info.value)
    assert "^" not in str(info.value)  # no regular expression in the message
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert f"{key}: " in err[0]


def test_run_refuses_at_once_what_check_config_refuses(tmp_path: Path) -> None:
    """`run` with a config `check-config` refuses exits 2 with one line, before starting."""
    path = tmp_path / "bad.toml"
    path.write_text('[capture]\nuri = "ftp://foo"\n')
    result = subprocess.run(
        [sys.executable, "-m", "vehicle_agent", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    expected = (
        f"vehicle-agent: config error: {path}: capture.uri: unknown scheme 'ftp': expected "
        "file://, v4l2://, csi://, gst:// or a path"
    )
    assert result.stderr.strip().splitlines() == [expected]


def test_toml_numbers_and_paths_are_read_as_before(tmp_path: Path) -> None:
    """Strict mode refuses strings for numbers, not integers for floats or strings for paths."""
    ca = tmp_path / "ca.pem"
    ca.write_text("not checked here")
    path = tmp_path / "ok.toml"
    path.write_text(
        f'[capture]\nfps = 30\nuri = "{tmp_path}"\n[agent]\nstate_dir = "{tmp_path}"\n'
        f'[uplink]\ntype = "mqtt"\nbroker = "mqtts://[::1]:8884"\nca_file = "{ca}"\n'
        "keepalive_s = 30\n"
    )
    config = load_config(path)
    assert config.capture.fps == 30.0
    assert config.agent.state_dir == tmp_path
    assert config.uplink.ca_file == ca  # type: ignore[union-attr]
    assert config.uplink.keepalive_s == 30  # type: ignore[union-attr]


def test_every_section_given_empty_takes_its_defaults_in_strict_mode() -> None:
    """A default strict validation would refuse (a Path object) breaks every TOML file that
    has its section: `[agent]` without `state_dir` did."""
    for model in all_models():
        required = [n for n, info in model.model_fields.items() if info.is_required()]
        if required:
            continue
        model.model_validate_json("{}", strict=True)
    config = parse_config({"agent": {}, "control": {"fan": {"driver": "sysfs"}}})
    assert config.agent.state_dir == Path("/var/lib/vehicle-agent")
