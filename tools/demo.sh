#!/usr/bin/env bash
# The README's first command: install everything, start a local Mosquitto broker, replay the
# bundled street footage through the daemon with simulated hardware and the fleet link to that
# broker, water drops landing on the simulated lens at 10 s (detected, cleaned by the fan,
# cleared), and print the report's paths and what a subscriber received; the last line is the
# path of report.html.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
REPORT="${1:-simulate-report}"
mkdir -p "$REPORT"
work="$(mktemp -d)"
port="$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
cat > "$work/mosquitto.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous true
persistence false
CONF
/usr/sbin/mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
broker=$!
sub=""
cleanup() {
  [ -n "$sub" ] && kill "$sub" 2>/dev/null
  kill "$broker" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
sleep 0.2  # mosquitto may ignore a signal sent right after start-up (field notes)
mosquitto_sub -V mqttv5 -h 127.0.0.1 -p "$port" -t 'fleet/+/+/telemetry' >"$REPORT/broker-telemetry.jsonl" &
sub=$!
.venv/bin/vehicle-agent --log-level WARNING simulate --config tools/demo.toml \
  --broker "mqtt://127.0.0.1:$port" --report "$REPORT" --speed max --inject "drops@10s"
sleep 1
received=$(wc -l <"$REPORT/broker-telemetry.jsonl")
echo "  broker       a local subscriber received $received telemetry messages: $REPORT/broker-telemetry.jsonl"
echo "Open the report (plots, events, side-by-side video; works offline):"
echo "$(cd "$REPORT" && pwd)/report.html"
