#!/usr/bin/env bash
# Install vehicle-agent as a systemd service on a Jetson (JetPack 5/6, Ubuntu) or any Debian-like
# system with systemd. Run as root from a checkout:   sudo bash tools/install-jetson.sh [--start]
# Uninstall:                                           sudo bash tools/install-jetson.sh --uninstall [--purge]
#
# Layout: venv in /opt/vehicle-agent/venv, unit in /etc/systemd/system, config in
# /etc/vehicle-agent (never overwritten), credentials in /etc/vehicle-agent/credentials (0700),
# state in /var/lib/vehicle-agent (systemd's StateDirectory=).
#
# JetPack parts it relies on, used from the system Python through --system-site-packages:
#   - OpenCV with GStreamer (python3-opencv / nvidia-opencv): csi:// cameras in-process;
#   - TensorRT (python3-libnvinfer) for the tensorrt enhancement backend; pycuda comes from pip
#     (the `jetson` extra) and builds against /usr/local/cuda.
# PyPI's OpenCV wheel has no GStreamer and would shadow JetPack's, so it is removed from the venv
# after installing; numpy is kept below 2 because JetPack's cv2 is built against numpy 1.x.
# DESTDIR=/some/dir stages the files there without touching users, systemd or apt (for packaging
# and for checking the layout on a workstation).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$(pwd)"
PREFIX=/opt/vehicle-agent
DEST="${DESTDIR:-}"
USER_NAME=vehicle-agent
START=0 UNINSTALL=0 PURGE=0
for arg in "$@"; do
  case "$arg" in
    --start) START=1 ;;
    --uninstall) UNINSTALL=1 ;;
    --purge) PURGE=1 ;;
    *) echo "install-jetson: unknown option $arg (--start, --uninstall [--purge])" >&2; exit 2 ;;
  esac
done
if [ -z "$DEST" ] && [ "$(id -u)" -ne 0 ]; then
  echo "install-jetson: run as root (sudo), or set DESTDIR to stage the files" >&2
  exit 2
fi
system() { [ -z "$DEST" ] && "$@" || true; }

if [ "$UNINSTALL" = 1 ]; then
  system systemctl disable --now vehicle-agent.service
  rm -f "$DEST/etc/systemd/system/vehicle-agent.service"
  rm -f "$DEST/etc/udev/rules.d/99-vehicle-agent.rules"
  system udevadm control --reload-rules
  system systemctl daemon-reload
  rm -rf "${DEST:?}$PREFIX"
  if [ "$PURGE" = 1 ]; then
    rm -rf "$DEST/etc/vehicle-agent" "$DEST/var/lib/vehicle-agent"
    system userdel "$USER_NAME"
  fi
  echo "install-jetson: removed (config and state $([ "$PURGE" = 1 ] && echo removed || echo kept))"
  exit 0
fi

if [ -z "$DEST" ]; then
  apt-get install -y -q --no-install-recommends python3-venv python3-pip gstreamer1.0-tools
  for group in video dialout gpio; do getent group "$group" >/dev/null || groupadd --system "$group"; done
  id "$USER_NAME" >/dev/null 2>&1 ||
    useradd --system --home-dir /var/lib/vehicle-agent --no-create-home \
      --shell /usr/sbin/nologin --groups video,dialout,gpio "$USER_NAME"
fi

install -d -m 0755 "$DEST$PREFIX" "$DEST$PREFIX/share"
python3 -m venv --system-site-packages "$DEST$PREFIX/venv"
EXTRAS=""
[ -d /usr/src/tensorrt ] || [ -e /usr/lib/python3/dist-packages/tensorrt ] && EXTRAS="[jetson]"
"$DEST$PREFIX/venv/bin/pip" install -q "numpy<2" "$REPO$EXTRAS"
if python3 -c 'import cv2, sys; sys.exit("GStreamer:                   YES" not in cv2.getBuildInformation())' 2>/dev/null; then
  "$DEST$PREFIX/venv/bin/pip" uninstall -y -q opencv-contrib-python-headless
  echo "install-jetson: using the system OpenCV (has GStreamer)"
fi
install -m 0644 README.md "$DEST$PREFIX/share/README.md"

install -d -m 0755 "$DEST/etc/systemd/system" "$DEST/etc/vehicle-agent"
install -d -m 0700 "$DEST/etc/vehicle-agent/credentials"
install -m 0644 systemd/vehicle-agent.service "$DEST/etc/systemd/system/vehicle-agent.service"
# PWM (sysfs fan), GPIO chips and the module's serial port for the groups gpio and dialout.
install -d -m 0755 "$DEST/etc/udev/rules.d"
install -m 0644 systemd/99-vehicle-agent.rules "$DEST/etc/udev/rules.d/99-vehicle-agent.rules"
system udevadm control --reload-rules
system udevadm trigger --subsystem-match=pwm --subsystem-match=tty --subsystem-match=gpio
if [ ! -e "$DEST/etc/vehicle-agent/vehicle-agent.toml" ]; then
  install -m 0640 systemd/vehicle-agent.toml "$DEST/etc/vehicle-agent/vehicle-agent.toml"
fi
[ -e "$DEST/etc/vehicle-agent/credentials/mqtt-password" ] ||
  install -m 0600 /dev/null "$DEST/etc/vehicle-agent/credentials/mqtt-password"
"$DEST$PREFIX/venv/bin/vehicle-agent" check-config "$DEST/etc/vehicle-agent/vehicle-agent.toml"

system systemctl daemon-reload
system systemctl enable vehicle-agent.service
[ "$START" = 1 ] && system systemctl restart vehicle-agent.service
echo "install-jetson: installed in ${DEST:-/}; edit /etc/vehicle-agent/vehicle-agent.toml, then"
echo "  systemctl start vehicle-agent && journalctl -u vehicle-agent -f && vehicle-agent status"
