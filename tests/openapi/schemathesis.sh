#!/usr/bin/env bash
# Runs schemathesis (pinned in .ci/run) against the HTTP API of a real
# prism-syncd on loopback, with an operator token and every check:
# the agent must answer exactly as /openapi.json says.
#
# Usage: tests/openapi/schemathesis.sh BIN_DIR   (where prism-syncd and prism-syncctl are)
set -euo pipefail
bin_dir=$(cd "$1" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d /tmp/prism-schemathesis.XXXXXX)
agent_pid=
cleanup() {
    [ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/local" "$work/remote"
echo "a file for the change log" > "$work/local/a.txt"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$work/config.toml" <<CONFIG
[[pair]]
name = "p"
local = "$work/local"
remote = "file://$work/remote"

[api]
listen = "127.0.0.1:$port"
CONFIG
ctl() { "$bin_dir/prism-syncctl" --socket "$work/s.sock" "$@"; }
"$bin_dir/prism-syncd" --config "$work/config.toml" --state-dir "$work/state" \
    --socket "$work/s.sock" 2>"$work/agent.log" &
agent_pid=$!
for _ in $(seq 100); do ctl status >/dev/null 2>&1 && break; sleep 0.1; done
ctl status >/dev/null || { cat "$work/agent.log" >&2; exit 1; }
token=$(ctl token issue --role operator --ttl 1h --name schemathesis)
# /events is left out: it is a stream that never ends, tested in
# tests/e2e/http.rs. Run from the temporary folder, so schemathesis's
# caches go away with it.
cd "$work"
schemathesis --config-file "$here/schemathesis.toml" --no-color \
    run "http://127.0.0.1:$port/openapi.json" \
    --exclude-path /events \
    --header "Authorization: Bearer $token" \
    --checks all \
    --max-examples "${SCHEMATHESIS_EXAMPLES:-30}" \
    --seed 1
