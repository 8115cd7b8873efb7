#!/usr/bin/env bash
# Instructions per request of the gateway, counted by valgrind's callgrind, for
# bench config variants (bench/gateway_configs.py: bare, default, no_access_log, ...).
#
# Wall-clock figures on a shared VM swing by +-20 % from run to run; instruction
# counts repeat to about 0.5 %, so they settle what a small change costs (the
# access log's share, for one). They do not see cache misses or system calls.
#
#   apt-get install valgrind
#   bench/instructions.sh default no_access_log     # about a minute per variant
#
# VARIANT+worker runs the gateway as one worker of `gateway run --workers N` runs it
# (--reuse-port), with Prometheus multiprocess mode on (PROMETHEUS_MULTIPROC_DIR):
# what the workers share, per request, against VARIANT in one process.
#
# Each variant: a gateway under callgrind in front of the bench upstream, 300
# requests to warm it up, then counters zeroed, then REQUESTS (500) POSTs to
# /v1/chat/completions over 10 keep-alive connections, then counters dumped.
set -euo pipefail
cd "$(dirname "$0")/.."
REQUESTS=${REQUESTS:-500}
# The gateway's interpreter: PYTHON, else the binary behind `python` (not a pyenv shim).
PYTHON=${PYTHON:-$(python -c 'import sys; print(sys.executable)')}
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 2; }
WORK=$(mktemp -d)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; rm -rf "$WORK"' EXIT
free_port() { python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

send() {  # send URL COUNT: exactly COUNT POSTs, 10 at a time
  python - "$1" "$2" <<'PY'
import asyncio, sys, aiohttp
url, count = sys.argv[1], int(sys.argv[2])
body = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}'
headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"}
async def main() -> None:
    left = count
    async with aiohttp.ClientSession() as session:
        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                async with session.post(url, data=body, headers=headers) as answer:
                    await answer.read()
                    assert answer.status == 200, answer.status
        await asyncio.gather(*(worker() for _ in range(10)))
asyncio.run(main())
PY
}

UPSTREAM=$(free_port)
python -m bench.upstream --port "$UPSTREAM" >/dev/null 2>&1 &
PIDS+=($!)
for variant in "$@"; do
  config=${variant%+worker}
  python -c "from bench.gateway_configs import gateway_config; print(gateway_config('$config'))" >"$WORK/$variant.toml"
  PORT=$(free_port)
  WORKER=()
  if [ "$config" != "$variant" ]; then
    mkdir -p "$WORK/$variant.metrics"
    WORKER=(env "PROMETHEUS_MULTIPROC_DIR=$WORK/$variant.metrics")
  fi
  CHATGPT_BASE_URL=http://127.0.0.1:$UPSTREAM/backend-api OPENAI_BASE_URL=http://127.0.0.1:$UPSTREAM \
    "${WORKER[@]}" valgrind --tool=callgrind --callgrind-out-file="$WORK/$variant.out" \
    "$PYTHON" -m gateway run -c "$WORK/$variant.toml" --host 127.0.0.1 --port "$PORT" \
    ${WORKER:+--reuse-port} >/dev/null 2>"$WORK/$variant.log" &
  GATEWAY=$!
  PIDS+=($GATEWAY)
  for _ in $(seq 300); do curl -sf -o /dev/null "http://127.0.0.1:$PORT/healthz" && break; sleep 1; done
  send "http://127.0.0.1:$PORT/v1/chat/completions" 300
  callgrind_control -z "$GATEWAY" >/dev/null 2>&1
  send "http://127.0.0.1:$PORT/v1/chat/completions" "$REQUESTS"
  callgrind_control -d "$GATEWAY" >/dev/null 2>&1
  sleep 1
  DUMP=$(ls -t "$WORK/$variant.out"* | head -1)
  TOTAL=$(awk '/^(summary|totals):/ {print $2; exit}' "$DUMP")
  echo "$variant: $((TOTAL / REQUESTS)) instructions/request"
  kill "$GATEWAY"
  wait "$GATEWAY" 2>/dev/null || true
done
