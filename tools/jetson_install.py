"""Jetson installer helper (standard library only): probe a Python, list the Jetson requirements.

    PYTHON tools/jetson_install.py probe                  # key=value lines, see `probe()`
    VENV/bin/python tools/jetson_install.py requirements [--extra jetson] > requirements.txt

Run by `tools/install-jetson.sh`, by file path and with whatever Python it is checking (the
system Python of JetPack 6.2 is 3.10 and has none of the project installed), so this imports
nothing outside the standard library.

`probe` reports the interpreter's version and what the venv would see of JetPack's packages:
cv2 (version, where it comes from, whether it was built with GStreamer), tensorrt, pycuda and
numpy, and the OpenCV distributions installed (a pip OpenCV shadows JetPack's).

`requirements` reads the installed project's own metadata (`importlib.metadata.requires`, after
`pip install --no-deps CHECKOUT`), never a second copy of the dependency list, and leaves out:

- every OpenCV wheel (`opencv-python`, `opencv-contrib-python-headless`, …): PyPI's OpenCV has
  no GStreamer and would shadow JetPack's system cv2 (built with GStreamer, needed by `csi://`)
  in a `--system-site-packages` venv;
- `tensorrt`: the Python bindings come from JetPack (`python3-libnvinfer`) for the system
  Python; PyPI's tensorrt wheels are not the Tegra build.

Requirements of an extra are kept only for the extras asked for (without their `extra ==`
marker); other markers (`python_version < "3.11"`) are kept for pip to evaluate.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from collections.abc import Iterable, Sequence
from importlib import metadata

DISTRIBUTION = "vehicle-agent"
FROM_JETPACK = ("tensorrt",)
"""Distributions JetPack provides for the system Python; never installed from pip."""
_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_EXTRA = re.compile(r"""^\s*extra\s*==\s*["']([^"']+)["']\s*$""")


def canonical(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def from_jetpack(name: str) -> bool:
    """Whether the distribution `name` must come from JetPack, not pip."""
    name = canonical(name)
    return name.startswith("opencv-") or name in FROM_JETPACK


def jetson_requirements(requires: Iterable[str], extras: Sequence[str] = ()) -> list[str]:
    """`requires` (Requires-Dist lines) minus what JetPack provides and minus other extras'."""
    wanted = {canonical(e) for e in extras}
    out: list[str] = []
    for line in requires:
        requirement, _, marker = line.partition(";")
        match = _NAME.match(requirement)
        if match is None:
            raise ValueError(f"not a requirement: {line!r}")
        if from_jetpack(match.group(1)):
            continue
        if "extra" in marker:
            extra = _EXTRA.match(marker)
            if extra is None:
                raise ValueError(f'{line!r}: only a bare `extra == "NAME"` marker is understood')
            if canonical(extra.group(1)) in wanted:
                out.append(requirement.strip())
            continue
        out.append(line.strip())
    return out


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _module(name: str) -> tuple[object | None, str]:
    """(module or None, 'VERSION PATH' or 'missing: WHY')."""
    try:
        module = importlib.import_module(name)
    except (
        Exception
    ) as exc:  # any failure to import (ImportError, a broken CUDA library) is "missing"
        return None, f"missing: {type(exc).__name__}: {_one_line(exc)}"
    version = getattr(module, "__version__", None) or getattr(module, "VERSION", "?")
    return module, f"{version} {getattr(module, '__file__', '') or ''}".strip()


def has_gstreamer(build_information: str) -> bool:
    """Whether `cv2.getBuildInformation()` says the build has GStreamer ('GStreamer: YES (1.x)')."""
    for line in build_information.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "GStreamer":
            return value.strip().upper().startswith("YES")
    return False


def probe() -> list[str]:
    """key=value lines: python, cv2, cv2_gstreamer (yes/no), tensorrt, pycuda, numpy,
    opencv_dists (installed OpenCV distributions: name@version, space separated)."""
    lines = ["python={}.{}.{}".format(*sys.version_info[:3]), f"executable={sys.executable}"]
    cv2, text = _module("cv2")
    lines.append(f"cv2={text}")
    if cv2 is not None:
        info = getattr(cv2, "getBuildInformation", lambda: "")()
        lines.append(f"cv2_gstreamer={'yes' if has_gstreamer(str(info)) else 'no'}")
    lines += [f"{name}={_module(name)[1]}" for name in ("tensorrt", "pycuda", "numpy")]
    dists = sorted(
        f"{canonical(d.metadata['Name'])}@{d.version}"
        for d in metadata.distributions()
        if d.metadata["Name"] and canonical(d.metadata["Name"]).startswith("opencv-")
    )
    lines.append(f"opencv_dists={' '.join(dists)}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("probe", help="what this Python sees of JetPack's packages")
    req = sub.add_parser("requirements", help="the project's requirements for a Jetson venv")
    req.add_argument(
        "--extra", action="append", default=[], help="also the requirements of this extra"
    )
    args = parser.parse_args(argv)
    if args.command == "probe":
        print("\n".join(probe()))
        return 0
    try:
        requires = metadata.requires(DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        print(
            f"jetson_install: {DISTRIBUTION} is not installed for {sys.executable}", file=sys.stderr
        )
        return 1
    for line in jetson_requirements(requires, args.extra):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
