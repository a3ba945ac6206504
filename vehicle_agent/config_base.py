"""The base of every config section, apart from `config.py` so section models may live beside
the code they configure (e.g. `control/settings.py`) without an import cycle."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ConfigModel(BaseModel):
    """Base of every config section: closed (unknown keys are errors) and immutable."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False
    )
