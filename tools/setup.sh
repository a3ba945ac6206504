#!/usr/bin/env bash
# Install everything vehicle-agent needs on a fresh Debian 12 machine, idempotently:
# Debian packages (GStreamer tools, Mosquitto broker), a virtual environment in .venv and the
# project with its dev tools. Used by tools/demo.sh, tools/test.sh and CI.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good  # gst:// sources
  mosquitto mosquitto-clients                                             # local MQTT broker
  systemd                                                                 # systemd-analyze (unit check)
  opencv-data                                                             # BRISQUE model files
)
# dev: the test tools (aiomqtt among them); fleet: what tools.fleet and tools.model_update need.
EXTRAS="${VEHICLE_AGENT_EXTRAS:-dev,fleet}"

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done

find_python() {
  for candidate in python3.11 python3.12 python3.13 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}
PYTHON="$(find_python || true)"
if [ -z "$PYTHON" ] || ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  missing+=(python3 python3-venv)
fi

if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
  PYTHON="$(find_python)"
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $PYTHON"
  "$PYTHON" -m venv .venv
fi
# Reinstall only when pyproject.toml changed since the last install.
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)-${EXTRAS//,/_}"
if [ ! -f "$stamp" ]; then
  echo "setup: installing vehicle-agent[$EXTRAS] into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[$EXTRAS]"
  rm -f .venv/.installed-*
  touch "$stamp"
fi
# The footage bank's real clips and photos from Debian's opencv-doc (extracted once into
# ~/.cache/vehicle-agent; tests and training read them from there).
.venv/bin/python -m tools.footage fetch >/dev/null
