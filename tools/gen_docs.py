"""Developer tool: generate the docs that restate code (configuration, events, MCU protocol tables).

python -m tools.gen_docs          # rewrite the files
python -m tools.gen_docs --check  # exit 1 if they are not current (CI)
"""

from __future__ import annotations

import argparse
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeGuard, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from firmware_bridge import gen_docs as mcu_docs
from tools.footage import docs as footage_docs
from vehicle_agent.catalogue import EVENT_TYPES
from vehicle_agent.config import Config
from vehicle_agent.service.metrics import metrics_markdown
from vehicle_agent.uplink.docs import mqtt_markdown

ROOT = Path(__file__).resolve().parent.parent
CONFIG_DOC = ROOT / "docs" / "configuration.md"
EVENTS_DOC = ROOT / "docs" / "events.md"
SERVICE_DOC = ROOT / "docs" / "service.md"
_METRICS_BLOCK = re.compile(r"(?s)(<!-- metrics: generated [^\n]*-->\n).*?(<!-- /metrics -->)")


def service_markdown() -> str:
    """docs/service.md with its metrics table rewritten from `service.metrics.METRICS`."""
    text = SERVICE_DOC.read_text(encoding="utf-8")
    if not _METRICS_BLOCK.search(text):
        raise ValueError(f"{SERVICE_DOC}: the generated metrics block is missing")
    return _METRICS_BLOCK.sub(lambda m: f"{m[1]}{metrics_markdown()}\n{m[2]}", text)


def _is_class(annotation: Any) -> TypeGuard[type[Any]]:
    """A class, not an alias such as `list[str]` (which Python 3.10 also counts as a `type`)."""
    return isinstance(annotation, type) and not isinstance(annotation, types.GenericAlias)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if _is_class(annotation) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in get_args(annotation):
        found.extend(_models_in(arg))
    return found


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Literal:
        return " \\| ".join(f"`{a!r}`".replace("'", '"') for a in get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in get_args(annotation))
    if origin is typing.Annotated:
        return _type_name(get_args(annotation)[0])
    if annotation is type(None):
        return "none"
    if _is_class(annotation):
        if issubclass(annotation, BaseModel):
            return "table"
        return {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}.get(
            annotation.__name__, annotation.__name__
        )
    return str(annotation)


def _bounds(info: FieldInfo) -> str:
    parts = []
    for meta in info.metadata:
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            value = getattr(meta, attr, None)
            if value is not None:
                parts.append(f"{sign} {value}")
        for attr, label in (("min_length", "length ≥"), ("max_length", "length ≤")):
            value = getattr(meta, attr, None)
            if value is not None:
                parts.append(f"{label} {value}")
        pattern = getattr(meta, "pattern", None)
        if pattern is not None:
            parts.append(f"matches `{pattern}`")
    return ", ".join(parts)


def _default(info: FieldInfo) -> str:
    if info.default is not PydanticUndefined:
        value = info.default
    elif info.default_factory is not None:
        return "(table)"
    else:
        return "required"
    if value is None:
        return "none"
    if isinstance(value, str | Path):
        return f'`"{value}"`'
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def _section(model: type[BaseModel], prefix: str, out: list[str]) -> None:
    rows: list[str] = []
    nested: list[tuple[str, type[BaseModel]]] = []
    for name, info in model.model_fields.items():
        models = _models_in(info.annotation)
        if models:
            key = f"{prefix}.{name}" if prefix else name
            nested.extend((key, sub) for sub in models)
            continue
        desc = (info.description or "").replace("|", "\\|")
        bounds = _bounds(info)
        rows.append(
            f"| `{name}` | {_type_name(info.annotation)} | {_default(info)} | {bounds} | {desc} |"
        )
    if rows:
        title = model.__doc__.strip().splitlines()[0] if model.__doc__ and prefix == "" else ""
        out.append(f"## `[{prefix}]` ({model.__name__})" if prefix else f"## {title}")
        out.append("")
        out.append("| key | type | default | bounds | description |")
        out.append("|---|---|---|---|---|")
        out.extend(rows)
        out.append("")
    for sub_prefix, sub in nested:
        _section(sub, sub_prefix, out)


def config_markdown() -> str:
    out = [
        "# Configuration reference",
        "",
        "<!-- Generated by `python -m tools.gen_docs` from vehicle_agent/config.py; do not edit. -->",
        "",
        "The daemon reads one TOML file (`vehicle-agent run --config FILE`; check it with",
        "`vehicle-agent check-config FILE`). Unknown keys and out-of-range values are errors that",
        "name the key, and so are values of the wrong TOML type: a string where a number belongs",
        '(`keepalive_s = "30"`), a float where an integer belongs, a number where a boolean does',
        "(integers are fine for floats). `check-config` and `run` also refuse a capture URI no",
        "source reads (an unknown scheme, `v4l2://` without an absolute device) and a file or",
        "folder that does not exist where one must (`ca_file`, `client_cert_file`,",
        "`client_key_file`, `model_dirs`, `calibration_dir`, `brisque_model_dir`): what",
        "`check-config` accepts, `run` starts with. Secrets never sit in the file: keys ending",
        "in `_credential` name a systemd credential or an environment variable.",
        "`systemd/vehicle-agent.toml` is a full example.",
        "Sections that choose an implementation (`[enhance.backend]`, `[control.fan]`, `[uplink]`)",
        "are selected by their `type`/`driver` key; each choice is listed below.",
        "",
    ]
    for name, info in Config.model_fields.items():
        out.append(f"<!-- [{name}]: {info.description} -->")
        for model in _models_in(info.annotation):
            _section(model, name, out)
    return "\n".join(out).rstrip() + "\n"


def events_markdown() -> str:
    out = [
        "# Events",
        "",
        "<!-- Generated by `python -m tools.gen_docs` from vehicle_agent/catalogue.py; do not edit. -->",
        "",
        "Each event is one JSON object per line in `events.jsonl` with `t` (seconds of video time:",
        "the recording's clock on the bench, time since start on the vehicle), `frame` (the",
        "sequence number of the frame concerned, or null), `type`, and the fields below.",
        "",
    ]
    for name, spec in EVENT_TYPES.items():
        out.append(f"## `{name}`")
        out.append("")
        out.append(spec.description)
        out.append("")
        if spec.fields:
            out.append("| field | meaning |")
            out.append("|---|---|")
            out.extend(f"| `{f}` | {m} |" for f, m in spec.fields.items())
            out.append("")
    return "\n".join(out).rstrip() + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the files are not current")
    args = parser.parse_args()
    stale = []
    generated = [
        (CONFIG_DOC, config_markdown()),
        (EVENTS_DOC, events_markdown()),
        (mcu_docs.DOC, mcu_docs.render(mcu_docs.DOC.read_text(encoding="utf-8"))),
        (ROOT / "docs" / "mqtt.md", mqtt_markdown()),
        (SERVICE_DOC, service_markdown()),
        (footage_docs.DOC, footage_docs.render(footage_docs.DOC.read_text(encoding="utf-8"))),
    ]
    for path, text in generated:
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current == text:
            continue
        if args.check:
            stale.append(path)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        names = ", ".join(str(p.relative_to(ROOT)) for p in stale)
        print(f"{names} not current: run `python -m tools.gen_docs`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
