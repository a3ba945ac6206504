"""The base of every config section, apart from `config.py` so section models may live beside
the code they configure (e.g. `control/settings.py`) without an import cycle."""

from __future__ import annotations

import types
from typing import Any, TypeGuard

from pydantic import BaseModel, ConfigDict
from pydantic.fields import FieldInfo


class ConfigModel(BaseModel):
    """Base of every config section: closed (unknown keys are errors) and immutable."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False
    )


# -- reading fields for the generated docs (docs/configuration.md, docs/mqtt.md) --------------


def is_class(annotation: Any) -> TypeGuard[type[Any]]:
    """A class, not an alias such as `list[str]` (which Python 3.10 also counts as a `type`)."""
    return isinstance(annotation, type) and not isinstance(annotation, types.GenericAlias)


def field_bounds(info: FieldInfo) -> str:
    """A field's constraints as the docs write them: "≥ 0.5, ≤ 60", "matches `…`"."""
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
