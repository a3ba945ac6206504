"""Enhance stage, model store: finds `<dir>/<name>/manifest.json` and verifies the model file.

Search order: the config's `model_dirs`, then `<agent.state_dir>/models` (models delivered by
updates), then the `models/` shipped with the package. When several folders hold a model of
the same name, the highest manifest version wins (ties: the earlier folder), so a downloaded
update overrides the shipped model and a newer package is not shadowed by a stale download.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import vehicle_agent
from vehicle_agent.enhance.manifest import (
    MANIFEST_FILE,
    Manifest,
    ManifestError,
    read_manifest,
    verify_file,
)

logger = logging.getLogger(__name__)


class ModelNotFoundError(LookupError):
    """No folder of the store holds a model of that name."""

    def __init__(self, name: str, dirs: Sequence[Path]) -> None:
        self.name = name
        self.dirs = list(dirs)
        where = ", ".join(str(d) for d in dirs) or "(no model folders)"
        super().__init__(f"model {name!r} not found in {where}")


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A model whose file was found and whose sha256 matched its manifest."""

    directory: Path
    manifest: Manifest
    onnx_path: Path

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def label(self) -> str:
        return self.manifest.label


def shipped_models_dir() -> Path:
    """`models/` shipped with the package: inside it in a wheel, beside it in a checkout."""
    package = Path(vehicle_agent.__file__).resolve().parent
    for candidate in (package / "models", package.parent / "models"):
        if candidate.is_dir():
            return candidate
    return package / "models"


def default_dirs(state_dir: Path | None, extra: Sequence[Path] = ()) -> list[Path]:
    dirs = [*extra]
    if state_dir is not None:
        dirs.append(state_dir / "models")
    dirs.append(shipped_models_dir())
    return dirs


class ModelStore:
    """Models by name across folders; `resolve` verifies before anything runs the file."""

    def __init__(self, dirs: Sequence[Path]) -> None:
        self.dirs = list(dirs)

    def _candidates(self, name: str) -> list[tuple[Path, Manifest]]:
        found: list[tuple[Path, Manifest]] = []
        for root in self.dirs:
            directory = root / name
            if not (directory / MANIFEST_FILE).is_file():
                continue
            manifest = read_manifest(directory)
            if manifest.name != name:
                raise ManifestError(
                    directory / MANIFEST_FILE,
                    f"name is {manifest.name!r} but the folder is {name!r}",
                )
            found.append((directory, manifest))
        return found

    def find(self, name: str) -> tuple[Path, Manifest]:
        """Folder and manifest of the newest model called `name` (not verified yet)."""
        found = self._candidates(name)
        if not found:
            raise ModelNotFoundError(name, self.dirs)
        # max() keeps the first of equal versions: earlier folders win ties.
        return max(found, key=lambda item: item[1].version_key())

    def resolve(self, name: str) -> ModelRef:
        """The newest model called `name`, its file's sha256 checked against the manifest."""
        directory, manifest = self.find(name)
        onnx_path = verify_file(directory, manifest)
        return ModelRef(directory, manifest, onnx_path)

    def names(self) -> list[str]:
        """Every model name in the store's folders."""
        found: set[str] = set()
        for root in self.dirs:
            if root.is_dir():
                found.update(p.parent.name for p in root.glob(f"*/{MANIFEST_FILE}"))
        return sorted(found)
