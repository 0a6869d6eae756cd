#!/usr/bin/env bash
# ferry demo: install what is missing, build, start three small local HTTP
# backends (web-1..3 on 127.0.0.1:9001-9003) and ferry in front of them on
# 127.0.0.1:8080 with conf/examples/demo.yaml. Runs in the foreground;
# Ctrl-C (or SIGTERM to this script) stops ferry and the backends.
#
# Tests run the demo beside other things on other ports:
#   FERRY_DEMO_PORTS="LISTEN WEB1 WEB2 WEB3" (default "8080 9001 9002 9003")
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)

read -r -a ports <<<"${FERRY_DEMO_PORTS:-8080 9001 9002 9003}"
if [ ${#ports[@]} -ne 4 ]; then
    echo "demo: FERRY_DEMO_PORTS needs 4 ports, got '${FERRY_DEMO_PORTS:-}'" >&2
    exit 2
fi
for p in "${ports[@]}"; do
    if ! [[ "$p" =~ ^[0-9]{1,5}$ ]] || [ "$p" -lt 1 ] || [ "$p" -gt 65535 ]; then
        echo "demo: '$p' in FERRY_DEMO_PORTS is not a port (1-65535)" >&2
        exit 2
    fi
done

bash deploy/install-deps build demo

# build/ may be in any state: not there yet, set up by tests/run, or from
# an older layout of this tree. ninja brings a set-up directory up to date
# by itself; one it cannot build is set up again (and, if even that fails,
# wiped and set up anew) before a last try, whose errors are shown.
build() { out=$(ninja -C build proxy/ferry bench/ferry-bench 2>&1); }
if [ ! -f build/meson-private/coredata.dat ]; then
    meson setup build >/dev/null
elif ! build; then
    echo "demo: build/ does not build as it is; setting it up again" >&2
    meson setup --reconfigure build -Dtests=auto >/dev/null \
        || meson setup --wipe build -Dtests=auto >/dev/null
fi
build || { echo "$out" >&2; exit 1; }

ferry="$root/build/proxy/ferry"
bench="$root/build/bench/ferry-bench"
conf="$root/conf/examples/demo.yaml"

pids=()
tmpconf=""
stop() {
    trap - EXIT INT TERM
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    [ -z "$tmpconf" ] || rm -f "$tmpconf"
    echo "demo stopped"
}
trap stop EXIT
trap 'exit 0' INT TERM

if [ "${ports[*]}" != "8080 9001 9002 9003" ]; then
    tmpconf=$(mktemp --suffix=.yaml)
    sed -e "s/127\.0\.0\.1:8080\$/127.0.0.1:${ports[0]}/" \
        -e "s/127\.0\.0\.1:9001\$/127.0.0.1:${ports[1]}/" \
        -e "s/127\.0\.0\.1:9002\$/127.0.0.1:${ports[2]}/" \
        -e "s/127\.0\.0\.1:9003\$/127.0.0.1:${ports[3]}/" "$conf" >"$tmpconf"
    for p in "${ports[@]}"; do
        grep -q "127\.0\.0\.1:$p\$" "$tmpconf" \
            || { echo "demo: could not move $conf to port $p" >&2; exit 1; }
    done
    conf=$tmpconf
fi
"$ferry" check-config "$conf" >/dev/null

for i in 1 2 3; do
    "$bench" serve --mode http --name "web-$i" \
        --listen "127.0.0.1:${ports[$i]}" >/dev/null &
    pids+=($!)
done

# Wait (up to 10 s each) until every backend listens: ferry started before
# one does sends its first connections to the others, and the round-robin
# the message below promises would skip it.
for i in 1 2 3; do
    for _ in $(seq 100); do
        if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:${ports[$i]}/"; then
            break
        fi
        sleep 0.1
    done
done

"$ferry" -c "$conf" &
ferry_pid=$!
pids+=("$ferry_pid")

# Wait (up to 10 s) until ferry accepts connections.
for _ in $(seq 100); do
    if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:${ports[0]}/"; then
        break
    fi
    if ! kill -0 "$ferry_pid" 2>/dev/null; then
        echo "ferry exited; see the log above" >&2
        exit 1
    fi
    sleep 0.1
done

cat <<MSG

ferry is balancing 127.0.0.1:${ports[0]} over web-1, web-2 and web-3.

  connect:         curl http://127.0.0.1:${ports[0]}/
  see the spread:  for i in 1 2 3 4 5 6; do curl -s http://127.0.0.1:${ports[0]}/; done
                   (round-robin: web-1, web-2 and web-3 in turn)
  reload config:   kill -HUP $ferry_pid     (after editing $conf)
  stop:            Ctrl-C here, or: kill $$

MSG
wait "$ferry_pid"
