"""Footage bank: the one file that says what may be trained or tuned on and what is held out.

Scenes (catalog items, by group) and renderer families (of lens soiling and of picture
degradations) are each either `train` or `held_out`. Training and tuning use only the train
parts; every benchmark's headline figure is held-out scenes × held-out renderers, quoted beside
the train figure.

The split is enforced, not just written down: a training or tuning entry point runs inside
`training("what")`, and every read of a scene (`catalog.load`) and every render
(`soiling.render_soiling`, `degradations.degrade`) calls `note_use`, which refuses a held-out
item there with `HeldOutError`. The same context records everything used, so a CI test runs each
entry point in `TRAINING_ENTRY_POINTS` on a tiny budget and checks the record.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from tools.footage.catalog import BY_NAME, CATALOG

Split = Literal["train", "held_out"]
UseKind = Literal["scene", "soiling", "degradation"]

HELD_OUT_GROUPS: frozenset[str] = frozenset(
    {
        "leuven",  # a real cobbled street: the moving-camera benchmark's scene
        "building",  # a street facade with trees
        "home",  # towers against the sky
        "cup",  # real handheld camera motion
        "tree",  # a real hand over the lens
        "chelsea",
        "motorcycle",
    }
)
"""Scene groups that no training run and no threshold ever sees."""

SCENE_SPLIT: dict[str, Split] = {
    entry.name: "held_out" if entry.group in HELD_OUT_GROUPS else "train" for entry in CATALOG
}
"""Every catalog item's split (by its group: one place is never on both sides)."""

SOILING_SPLIT: dict[str, Split] = {
    "sim": "train",
    "blurdisc": "train",
    "refract": "held_out",
    "optics": "train",
}
"""Lens soiling renderer families (`soiling.FAMILIES`)."""

DEGRADATION_SPLIT: dict[str, Split] = {"gan": "train", "sensor": "train", "atmos": "held_out"}
"""Picture degradation renderer families (`degradations.FAMILIES`)."""

TRAINING_ENTRY_POINTS: tuple[str, ...] = (
    "tools.gan.data:training_images",
    "tools.gan.data:bank_training_images",
    "tools.gan.data:bank_pair_sampler",
    "tools.soilnet.data:build_training_set",
)
"""Every function that gathers data for training or tuning (module:function); the CI test
(tests/footage/test_splits.py) runs each on a tiny budget inside `training` and checks that
nothing held out was touched."""

_TABLES: dict[UseKind, dict[str, Split]] = {
    "scene": SCENE_SPLIT,
    "soiling": SOILING_SPLIT,
    "degradation": DEGRADATION_SPLIT,
}


class HeldOutError(Exception):
    """A held-out scene or renderer was asked for inside a training or tuning context."""

    def __init__(self, kind: UseKind, name: str, purpose: str) -> None:
        self.kind = kind
        self.name = name
        self.purpose = purpose
        super().__init__(
            f"{kind} {name!r} is held out and may not be used for training or tuning "
            f"({purpose}); the split is tools/footage/splits.py"
        )


@dataclass
class Usage:
    """What one training context used: (kind, name) pairs."""

    purpose: str
    used: set[tuple[UseKind, str]] = field(default_factory=set)

    def held_out(self) -> set[tuple[UseKind, str]]:
        return {(kind, name) for kind, name in self.used if split_of(kind, name) == "held_out"}


_CONTEXT: contextvars.ContextVar[Usage | None] = contextvars.ContextVar(
    "footage_training", default=None
)


def split_of(kind: UseKind, name: str) -> Split:
    """The split of a scene or renderer family; an unknown name is an error (fail closed)."""
    table = _TABLES[kind]
    if name not in table:
        raise KeyError(f"{kind} {name!r} is not in the split (tools/footage/splits.py)")
    return table[name]


def names(kind: UseKind, split: Split) -> tuple[str, ...]:
    """The scenes or families of one side of the split, in table order."""
    return tuple(name for name, side in _TABLES[kind].items() if side == split)


def scenes(split: Split, kind: Literal["video", "photo"] | None = None) -> tuple[str, ...]:
    """Scene names of one side, optionally only videos or photos."""
    return tuple(
        name for name in names("scene", split) if kind is None or BY_NAME[name].kind == kind
    )


@contextlib.contextmanager
def training(purpose: str) -> Iterator[Usage]:
    """Run a training or tuning data gathering: held-out items are refused inside. Nested,
    the outer context keeps the record."""
    outer = _CONTEXT.get()
    if outer is not None:
        yield outer
        return
    usage = Usage(purpose)
    token = _CONTEXT.set(usage)
    try:
        yield usage
    finally:
        _CONTEXT.reset(token)


def in_training() -> bool:
    return _CONTEXT.get() is not None


def note_use(kind: UseKind, name: str, purpose: str = "") -> None:
    """Called by every scene read and render; refuses a held-out item inside `training`."""
    side = split_of(kind, name)
    usage = _CONTEXT.get()
    if usage is None:
        return
    usage.used.add((kind, name))
    if side == "held_out":
        raise HeldOutError(kind, name, purpose or usage.purpose)
