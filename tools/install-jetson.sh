#!/usr/bin/env bash
# Install vehicle-agent as a systemd service on a Jetson: JetPack 6.2 (L4T R36.4.3+, Ubuntu 22.04,
# Python 3.10) or JetPack 7.2 (L4T R39.2, Ubuntu 24.04, Python 3.12). Run as root from a checkout:
#   sudo bash tools/install-jetson.sh [--start]          install (and start)
#   bash tools/install-jetson.sh --dry-run               check this board, print what it would do
#   sudo bash tools/install-jetson.sh --uninstall [--purge]
#   sudo bash tools/install-jetson.sh --generic          any Debian-like system, no JetPack parts
#
# Layout: venv in /opt/vehicle-agent/venv, unit in /etc/systemd/system, config in
# /etc/vehicle-agent (never overwritten), credentials in /etc/vehicle-agent/credentials (0700),
# state in /var/lib/vehicle-agent (systemd's StateDirectory=).
#
# Before anything is changed it refuses (exit 3, one line saying why):
#   - an L4T release other than R36.4.3+ (JetPack 6.2) or R39.2 (JetPack 7.2), read from
#     /etc/nv_tegra_release, else from the nvidia-l4t-core package's version;
#   - a system Python other than the one that release ships (3.10 / 3.12): JetPack's TensorRT
#     and GStreamer OpenCV bindings exist for that interpreter only;
#   - a system OpenCV without GStreamer, or no TensorRT bindings (apt: nvidia-jetpack);
#   - no CUDA toolkit (nvcc and cuda.h under CUDA_ROOT): pycuda is built from source against it.
# The venv is made from the system Python with --system-site-packages, so JetPack's cv2 and
# tensorrt are the ones imported. pip never installs OpenCV or TensorRT: the project goes in with
# --no-deps, then its dependencies from its own metadata minus opencv-* and tensorrt
# (tools/jetson_install.py requirements), numpy kept below 2 (JetPack's cv2 is built against 1.x).
# After the install the venv's cv2 must be the system one with GStreamer, or the script fails.
#
# Paths it probes, overridable (tests run it against fake release files): NV_TEGRA_RELEASE
# (/etc/nv_tegra_release), DPKG_QUERY (dpkg-query), SYSTEM_PYTHON (/usr/bin/python3), CUDA_ROOT
# (/usr/local/cuda). DESTDIR=/some/dir stages the files there without touching users, apt or
# systemd (packaging, and checking the layout on a workstation with --generic).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$(pwd)"
PREFIX=/opt/vehicle-agent
DEST="${DESTDIR:-}"
USER_NAME=vehicle-agent
NV_TEGRA_RELEASE="${NV_TEGRA_RELEASE:-/etc/nv_tegra_release}"
DPKG_QUERY="${DPKG_QUERY:-dpkg-query}"
SYSTEM_PYTHON="${SYSTEM_PYTHON:-/usr/bin/python3}"
CUDA_ROOT="${CUDA_ROOT:-/usr/local/cuda}"
EXIT_USAGE=2
EXIT_UNSUPPORTED=3
START=0 UNINSTALL=0 PURGE=0 DRY=0 GENERIC=0
for arg in "$@"; do
  case "$arg" in
    --start) START=1 ;;
    --uninstall) UNINSTALL=1 ;;
    --purge) PURGE=1 ;;
    --dry-run) DRY=1 ;;
    --generic) GENERIC=1 ;;
    -h | --help) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *)
      echo "install-jetson: unknown option $arg (--start, --dry-run, --generic, --uninstall [--purge])" >&2
      exit "$EXIT_USAGE"
      ;;
  esac
done

say() { echo "install-jetson: $*"; }
refuse() { echo "install-jetson: $*" >&2; exit "$EXIT_UNSUPPORTED"; }
# run CMD...: runs it, or with --dry-run prints it (every change goes through here or `system`).
run() {
  if [ "$DRY" = 1 ]; then
    local arg line="would run:"
    for arg in "$@"; do
      if [[ $arg =~ ^[A-Za-z0-9_./=:,@%+-]+$ ]]; then line+=" $arg"; else line+=" '${arg//\'/\'\\\'\'}'"; fi
    done
    echo "$line"
  else
    "$@"
  fi
}
# system CMD...: like run, but only on the real system (not when staging into DESTDIR).
system() { if [ -z "$DEST" ]; then run "$@"; fi; }

if [ -z "$DEST" ] && [ "$DRY" = 0 ] && [ "$(id -u)" -ne 0 ]; then
  echo "install-jetson: run as root (sudo), --dry-run to check, or set DESTDIR to stage the files" >&2
  exit "$EXIT_USAGE"
fi

if [ "$UNINSTALL" = 1 ]; then
  system systemctl disable --now vehicle-agent.service
  run rm -f "$DEST/etc/systemd/system/vehicle-agent.service"
  run rm -f "$DEST/etc/udev/rules.d/99-vehicle-agent.rules"
  system udevadm control --reload-rules
  system systemctl daemon-reload
  run rm -rf "${DEST:?}$PREFIX"
  if [ "$PURGE" = 1 ]; then
    run rm -rf "$DEST/etc/vehicle-agent" "$DEST/var/lib/vehicle-agent"
    system userdel "$USER_NAME"
  fi
  say "removed (config and state $([ "$PURGE" = 1 ] && echo removed || echo kept))"
  exit 0
fi

# -- what this board is ---------------------------------------------------------------------

# The L4T release as MAJOR.MINOR.PATCH ("36.4.3"), or nothing when this is not a Jetson.
l4t_release() {
  local line version
  if [ -e "$NV_TEGRA_RELEASE" ]; then
    line="$(head -n 1 "$NV_TEGRA_RELEASE")" ||
      refuse "$NV_TEGRA_RELEASE: cannot read it"
    # "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: …"
    if [[ $line =~ ^#\ *R([0-9]+)\ *\(release\),\ *REVISION:\ *([0-9]+)\.([0-9]+) ]]; then
      echo "${BASH_REMATCH[1]}.${BASH_REMATCH[2]}.${BASH_REMATCH[3]}"
      return
    fi
    refuse "$NV_TEGRA_RELEASE: no L4T release in '$line' (expected '# R36 (release), REVISION: 4.3, …')"
  fi
  # No release file: the nvidia-l4t-core package's version, "36.4.3-20250107174145".
  # shellcheck disable=SC2016 # ${Version} is dpkg-query's field, not a shell variable
  version="$("$DPKG_QUERY" -W -f='${Version}' nvidia-l4t-core 2>/dev/null)" || version=""
  if [[ $version =~ ^([0-9]+)\.([0-9]+)\.([0-9]+) ]]; then
    echo "${BASH_REMATCH[1]}.${BASH_REMATCH[2]}.${BASH_REMATCH[3]}"
  elif [ -n "$version" ]; then
    refuse "nvidia-l4t-core $version: not an L4T version (expected e.g. 36.4.3-…)"
  fi
}

# "KEY=VALUE" line of the probe output → VALUE.
field() { sed -n "s/^$1=//p" <<<"$PROBE" | head -n 1; }

PYTHON_WANT="3.10"
if [ "$GENERIC" = 1 ]; then
  say "--generic: no JetPack checks, OpenCV from PyPI (no GStreamer in-process), no TensorRT"
else
  L4T="$(l4t_release)"
  [ -n "$L4T" ] || refuse "not a Jetson: no $NV_TEGRA_RELEASE and no nvidia-l4t-core package; JetPack 6.2 or 7.2 is needed (--generic installs without the JetPack parts)"
  IFS=. read -r L4T_MAJOR L4T_MINOR L4T_PATCH <<<"$L4T"
  case "$L4T_MAJOR.$L4T_MINOR" in
    36.4)
      [ "$L4T_PATCH" -ge 3 ] ||
        refuse "L4T R$L4T is JetPack 6.1 or older: not supported; upgrade to JetPack 6.2 (L4T R36.4.3 or later) or 7.2 (R39.2)"
      JETPACK=6.2 PYTHON_WANT=3.10 CUDA_WANT=12
      ;;
    39.2) JETPACK=7.2 PYTHON_WANT=3.12 CUDA_WANT=13 ;;
    *)
      case "$L4T_MAJOR" in
        35) known=" (JetPack 5, Python 3.8)" ;;
        36) known=" (a JetPack 6 before 6.2)" ;;
        38) known=" (JetPack 7.0/7.1, Jetson Thor)" ;;
        *) known="" ;;
      esac
      refuse "L4T R$L4T$known is not supported: JetPack 6.2 (L4T R36.4.3 or later R36.4) or JetPack 7.2 (L4T R39.2) is needed"
      ;;
  esac
  say "L4T R$L4T: JetPack $JETPACK (system Python $PYTHON_WANT, CUDA $CUDA_WANT)"
fi

[ -x "$SYSTEM_PYTHON" ] || refuse "no system Python at $SYSTEM_PYTHON (apt-get install python3)"
PROBE="$("$SYSTEM_PYTHON" "$REPO/tools/jetson_install.py" probe)" ||
  refuse "$SYSTEM_PYTHON could not run tools/jetson_install.py probe"
PYTHON_VERSION="$(field python)"
if [ "$GENERIC" = 1 ]; then
  # The oldest Python the project supports.
  "$SYSTEM_PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
    refuse "$SYSTEM_PYTHON is Python $PYTHON_VERSION; vehicle-agent needs 3.10 or later"
else
  [ "${PYTHON_VERSION%.*}" = "$PYTHON_WANT" ] ||
    refuse "$SYSTEM_PYTHON is Python $PYTHON_VERSION, but JetPack $JETPACK ships $PYTHON_WANT and its TensorRT and OpenCV bindings exist for that one only; point SYSTEM_PYTHON at the JetPack Python"
  cv2_line="$(field cv2)"
  case "$cv2_line" in
    missing*) refuse "no OpenCV for $SYSTEM_PYTHON ($cv2_line); install JetPack's: apt-get install nvidia-opencv" ;;
  esac
  [ "$(field cv2_gstreamer)" = yes ] ||
    refuse "the system OpenCV ($cv2_line) has no GStreamer; csi:// needs JetPack's (apt-get install nvidia-opencv), not pip's opencv-python"
  case "$(field opencv_dists)" in
    *opencv-python* | *opencv-contrib*)
      refuse "pip's OpenCV ($(field opencv_dists)) is installed for $SYSTEM_PYTHON and shadows JetPack's; remove it (pip uninstall) first"
      ;;
  esac
  trt_line="$(field tensorrt)"
  case "$trt_line" in
    missing*) refuse "no TensorRT for $SYSTEM_PYTHON ($trt_line); install JetPack's: apt-get install nvidia-jetpack (python3-libnvinfer)" ;;
  esac
  say "system Python $PYTHON_VERSION: OpenCV ${cv2_line%% *} with GStreamer, TensorRT ${trt_line%% *}"
  NVCC="$CUDA_ROOT/bin/nvcc"
  if [ ! -x "$NVCC" ] || [ ! -e "$CUDA_ROOT/include/cuda.h" ]; then
    refuse "CUDA toolkit missing: no $NVCC or $CUDA_ROOT/include/cuda.h; pycuda is built against it (apt-get install nvidia-jetpack, or set CUDA_ROOT)"
  fi
  # pycuda's build includes cuRAND's header (its default configuration); a toolkit without it
  # stops the pycuda build half way, after minutes of compiling.
  [ -e "$CUDA_ROOT/include/curand.h" ] ||
    refuse "CUDA toolkit incomplete: no $CUDA_ROOT/include/curand.h, which the pycuda build needs (apt-get install nvidia-jetpack, or the libcurand-dev package of this CUDA)"
  nvcc_release="$("$NVCC" --version | sed -n 's/.*release \([0-9][0-9.]*\).*/\1/p' | head -n 1)"
  [ -n "$nvcc_release" ] || refuse "$NVCC --version printed no 'release X.Y'"
  if [ "${nvcc_release%%.*}" != "$CUDA_WANT" ]; then
    say "warning: $NVCC is CUDA $nvcc_release, JetPack $JETPACK ships CUDA $CUDA_WANT; pycuda is built against $nvcc_release"
  else
    say "CUDA toolkit $nvcc_release in $CUDA_ROOT"
  fi
fi

# -- install --------------------------------------------------------------------------------

VENV="$DEST$PREFIX/venv"
if [ -z "$DEST" ]; then
  packages=(python3-venv python3-pip gstreamer1.0-tools)
  [ "$GENERIC" = 1 ] || packages+=(python3-dev build-essential) # pycuda builds from source
  run apt-get install -y -q --no-install-recommends "${packages[@]}"
  for group in video dialout gpio; do
    getent group "$group" >/dev/null || run groupadd --system "$group"
  done
  id "$USER_NAME" >/dev/null 2>&1 ||
    run useradd --system --home-dir /var/lib/vehicle-agent --no-create-home \
      --shell /usr/sbin/nologin --groups video,dialout,gpio "$USER_NAME"
fi

run install -d -m 0755 "$DEST$PREFIX" "$DEST$PREFIX/share"
run "$SYSTEM_PYTHON" -m venv --system-site-packages "$VENV"
if [ "$GENERIC" = 1 ]; then
  run "$VENV/bin/pip" install -q "numpy<2" "$REPO"
else
  REQUIREMENTS="$DEST$PREFIX/share/requirements.txt"
  run "$VENV/bin/pip" install -q --no-deps "$REPO"
  if [ "$DRY" = 1 ]; then
    echo "would write $REQUIREMENTS: $VENV/bin/python $REPO/tools/jetson_install.py requirements --extra jetson (the project's dependencies without opencv-* and tensorrt)"
  else
    "$VENV/bin/python" "$REPO/tools/jetson_install.py" requirements --extra jetson >"$REQUIREMENTS"
  fi
  # pycuda's setup finds the toolkit through CUDA_ROOT and nvcc on PATH. pip then says that
  # vehicle-agent requires opencv-contrib-python-headless, "which is not installed": expected,
  # JetPack's cv2 (no pip metadata) stands in for it, and the check below proves it does.
  say "pip will report opencv-contrib-python-headless as not installed: JetPack's cv2 stands in for it"
  run env CUDA_ROOT="$CUDA_ROOT" PATH="$CUDA_ROOT/bin:$PATH" \
    "$VENV/bin/pip" install -q "numpy<2" -r "$REQUIREMENTS"
  if [ "$DRY" = 1 ]; then
    echo "would check: $VENV/bin/python sees the system cv2 (with GStreamer) and tensorrt, and pycuda imports"
  else
    PROBE="$("$VENV/bin/python" "$REPO/tools/jetson_install.py" probe)"
    case "$(field cv2)" in
      *"$VENV"*) refuse "the venv's cv2 is pip's ($(field cv2)), not JetPack's; remove it: $VENV/bin/pip uninstall $(field opencv_dists)" ;;
    esac
    [ "$(field cv2_gstreamer)" = yes ] || refuse "the venv's cv2 ($(field cv2)) has no GStreamer"
    case "$(field tensorrt) $(field pycuda)" in
      *missing*) refuse "the venv cannot import TensorRT or pycuda: tensorrt=$(field tensorrt) pycuda=$(field pycuda)" ;;
    esac
    say "venv: cv2 $(field cv2) (GStreamer), tensorrt $(field tensorrt), pycuda $(field pycuda)"
  fi
fi
run install -m 0644 README.md "$DEST$PREFIX/share/README.md"

run install -d -m 0755 "$DEST/etc/systemd/system" "$DEST/etc/vehicle-agent"
run install -d -m 0700 "$DEST/etc/vehicle-agent/credentials"
run install -m 0644 systemd/vehicle-agent.service "$DEST/etc/systemd/system/vehicle-agent.service"
# PWM (sysfs fan), GPIO chips and the module's serial port for the groups gpio and dialout.
run install -d -m 0755 "$DEST/etc/udev/rules.d"
run install -m 0644 systemd/99-vehicle-agent.rules "$DEST/etc/udev/rules.d/99-vehicle-agent.rules"
system udevadm control --reload-rules
system udevadm trigger --subsystem-match=pwm --subsystem-match=tty --subsystem-match=gpio
CONFIG="$DEST/etc/vehicle-agent/vehicle-agent.toml"
if [ ! -e "$CONFIG" ]; then
  # Group-readable by the service user (the unit runs as User=vehicle-agent).
  if [ -z "$DEST" ]; then config_group=(-g "$USER_NAME"); else config_group=(); fi
  run install -m 0640 "${config_group[@]}" systemd/vehicle-agent.toml "$CONFIG"
fi
[ -e "$DEST/etc/vehicle-agent/credentials/mqtt-password" ] ||
  run install -m 0600 /dev/null "$DEST/etc/vehicle-agent/credentials/mqtt-password"
run "$VENV/bin/vehicle-agent" check-config "$CONFIG"
# What the config needs that this board cannot do yet (camera, backends, fan, MCU port): reported,
# not fatal, since the module may not be plugged in at install time. As the service user, so the
# permission checks mean something; --no-mcu: a running daemon (reinstall) holds the MCU's port.
doctor=("$VENV/bin/vehicle-agent" doctor --no-mcu --config "$CONFIG")
[ -n "$DEST" ] || doctor=(runuser -u "$USER_NAME" -- "${doctor[@]}")
if [ "$DRY" = 1 ]; then
  run "${doctor[@]}"
else
  "${doctor[@]}" || say "warning: vehicle-agent doctor found something the config needs missing (above)"
fi

system systemctl daemon-reload
system systemctl enable vehicle-agent.service
if [ "$START" = 1 ]; then system systemctl restart vehicle-agent.service; fi
if [ "$DRY" = 1 ]; then
  say "dry run: nothing was changed"
else
  say "installed in ${DEST:-/}; edit /etc/vehicle-agent/vehicle-agent.toml, then"
  echo "  sudo -u $USER_NAME $PREFIX/venv/bin/vehicle-agent doctor   # as the service user"
  echo "  systemctl start vehicle-agent && journalctl -u vehicle-agent -f && $PREFIX/venv/bin/vehicle-agent status"
fi
