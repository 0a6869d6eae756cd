#!/usr/bin/env bash
# ferry demo: install what is missing, build, start three small local HTTP
# backends (web-1..3 on 127.0.0.1:9001-9003) and ferry in front of them on
# 127.0.0.1:8080 with conf/examples/demo.yaml. Runs in the foreground;
# Ctrl-C (or SIGTERM to this script) stops ferry and the backends.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)

bash deploy/install-deps build demo
if [ ! -f build/build.ninja ]; then
    meson setup build >/dev/null
fi
ninja -C build proxy/ferry bench/ferry-bench >/dev/null

ferry="$root/build/proxy/ferry"
bench="$root/build/bench/ferry-bench"
conf="$root/conf/examples/demo.yaml"
"$ferry" check-config "$conf" >/dev/null

pids=()
stop() {
    trap - EXIT INT TERM
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    echo "demo stopped"
}
trap stop EXIT
trap 'exit 0' INT TERM

for i in 1 2 3; do
    "$bench" serve --mode http --name "web-$i" --listen "127.0.0.1:900$i" \
        >/dev/null &
    pids+=($!)
done

"$ferry" -c "$conf" &
ferry_pid=$!
pids+=("$ferry_pid")

# Wait (up to 10 s) until ferry accepts connections.
for _ in $(seq 100); do
    if curl -s -o /dev/null --max-time 1 http://127.0.0.1:8080/; then
        break
    fi
    if ! kill -0 "$ferry_pid" 2>/dev/null; then
        echo "ferry exited; see the log above" >&2
        exit 1
    fi
    sleep 0.1
done

cat <<MSG

ferry is balancing 127.0.0.1:8080 over web-1, web-2 and web-3.

  connect:         curl http://127.0.0.1:8080/
  see the spread:  for i in 1 2 3 4 5 6; do curl -s http://127.0.0.1:8080/; done
                   (round-robin: web-1, web-2 and web-3 in turn)
  reload config:   kill -HUP $ferry_pid     (after editing $conf)
  stop:            Ctrl-C here, or: kill $$

MSG
wait "$ferry_pid"
