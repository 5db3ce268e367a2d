#!/usr/bin/env bash
# Install and run the IPFS daemon that the ipfs-marked tests talk to.
#
#   scripts/ipfs-test-node.sh install           npm install into the cache directory
#   scripts/ipfs-test-node.sh start DIR [PORT]  init a repo in DIR unless one
#                                               is there, start the daemon
#                                               (API on PORT, default 5001;
#                                               PORT+1..PORT+3 for the rest),
#                                               print its pid
#   scripts/ipfs-test-node.sh stop PID          SIGTERM, then SIGKILL after 10 s
#
# The daemon is js-ipfs (see ops/ipfs-test-node/README.md), a stand-in for
# Kubo that installs from npm alone. `start` expects the caller to be inside
# a network namespace that has only a loopback interface; it binds every
# listener to 127.0.0.1 and runs offline.
#
# Environment:
#   WEALL_IPFS_TEST_NODE_CACHE  install directory (default
#                               ${XDG_CACHE_HOME:-~/.cache}/weall/ipfs-test-node, so
#                               that fresh clones on one machine share it)
#   WEALL_IPFS_TEST_NODE_WAIT_S max seconds `start` waits for the API (default 60)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SPEC_DIR="$ROOT/ops/ipfs-test-node"
if [[ -n "${XDG_CACHE_HOME:-}" ]]; then
    DEFAULT_CACHE="$XDG_CACHE_HOME/weall/ipfs-test-node"
elif [[ -n "${HOME:-}" ]]; then
    DEFAULT_CACHE="$HOME/.cache/weall/ipfs-test-node"
else
    DEFAULT_CACHE="$ROOT/.cache/ipfs-test-node"
fi
CACHE_DIR="${WEALL_IPFS_TEST_NODE_CACHE:-$DEFAULT_CACHE}"
JSIPFS="$CACHE_DIR/node_modules/.bin/jsipfs"

log() {
    echo "ipfs-test-node: $*" >&2
}

usage() {
    sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

package_hash() {
    sha256sum "$SPEC_DIR/package.json" | cut -d' ' -f1
}

cmd_install() {
    local stamp="$CACHE_DIR/.package-json.sha256"
    local wanted
    wanted="$(package_hash)"
    mkdir -p "$(dirname "$CACHE_DIR")"
    # Clones that share the cache must not run npm in it at the same time.
    exec 9>"$CACHE_DIR.lock"
    flock 9
    if [[ -x "$JSIPFS" && -f "$stamp" && "$(cat "$stamp")" == "$wanted" ]]; then
        log "already installed in $CACHE_DIR (package.json sha256 $wanted)"
        return 0
    fi
    command -v npm >/dev/null || { log "npm not found; install Node.js 20 and npm"; exit 1; }
    mkdir -p "$CACHE_DIR"
    rm -f "$stamp"
    cp "$SPEC_DIR/package.json" "$CACHE_DIR/package.json"
    log "npm install into $CACHE_DIR (about 800 packages, 200 MB)"
    local started=$SECONDS
    # --ignore-scripts: no install step may download anything outside npm.
    (cd "$CACHE_DIR" && NO_UPDATE_NOTIFIER=1 npm install --ignore-scripts \
        --omit=optional --no-audit --no-fund --loglevel=error >&2)
    [[ -x "$JSIPFS" ]] || { log "npm install finished but $JSIPFS is missing"; exit 1; }
    echo "$wanted" >"$stamp"
    log "installed in $((SECONDS - started)) s"
}

# Write DIR/config.json: offline-config.json with every port derived from
# the API port, so that two daemons can run side by side.
write_config() {
    local target="$1" port="$2"
    node -e '
        const fs = require("fs");
        const [source, target, port] = process.argv.slice(1);
        const config = JSON.parse(fs.readFileSync(source, "utf8"));
        const base = Number(port);
        config.Addresses.API = `/ip4/127.0.0.1/tcp/${base}`;
        config.Addresses.Gateway = `/ip4/127.0.0.1/tcp/${base + 1}`;
        config.Addresses.RPC = `/ip4/127.0.0.1/tcp/${base + 2}`;
        config.Addresses.Swarm = [`/ip4/127.0.0.1/tcp/${base + 3}`];
        fs.writeFileSync(target, JSON.stringify(config, null, 2));
    ' "$SPEC_DIR/offline-config.json" "$target" "$port"
}

# Exit 0 when POST /api/v0/version returns 200 on 127.0.0.1:PORT.
api_responds() {
    python3 - "$1" <<'EOF'
import sys
import urllib.request

url = f"http://127.0.0.1:{sys.argv[1]}/api/v0/version"
try:
    with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=2) as response:
        sys.exit(0 if response.status == 200 else 1)
except OSError:
    sys.exit(1)
EOF
}

cmd_start() {
    local dir="${1:-}" port="${2:-5001}"
    [[ -n "$dir" ]] || usage
    [[ -x "$JSIPFS" ]] || { log "not installed; run: $0 install"; exit 1; }
    [[ "$port" =~ ^[0-9]+$ ]] && ((port >= 1024 && port <= 65532)) \
        || { log "invalid API port $port (expected 1024 to 65532)"; exit 2; }
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    export IPFS_PATH="$dir/repo" NO_UPDATE_NOTIFIER=1
    write_config "$dir/config.json" "$port"
    local started=$SECONDS

    if [[ -f "$IPFS_PATH/config" ]]; then
        log "reusing the repo in $IPFS_PATH"
    else
        "$JSIPFS" init --profile test --defaultConfig "$dir/config.json" --emptyRepo \
            >"$dir/init.log" 2>&1 || { log "init failed:"; cat "$dir/init.log" >&2; exit 1; }
    fi

    "$JSIPFS" daemon --offline --enable-preload=false </dev/null >"$dir/daemon.log" 2>&1 &
    local pid=$!
    local wait_s="${WEALL_IPFS_TEST_NODE_WAIT_S:-60}"
    until api_responds "$port"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "daemon exited before its API responded; daemon.log:"
            tail -n 40 "$dir/daemon.log" >&2
            exit 1
        fi
        if ((SECONDS - started > wait_s)); then
            log "API on port $port did not respond within $wait_s s"
            kill -KILL "$pid" 2>/dev/null || true
            exit 1
        fi
        sleep 0.2
    done
    log "daemon pid $pid ready on http://127.0.0.1:$port after $((SECONDS - started)) s (repo $IPFS_PATH)"
    echo "$pid"
}

cmd_stop() {
    local pid="${1:-}"
    [[ "$pid" =~ ^[0-9]+$ ]] || usage
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    log "daemon pid $pid still running 10 s after SIGTERM; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
}

case "${1:-}" in
    install) cmd_install ;;
    start) shift; cmd_start "$@" ;;
    stop) shift; cmd_stop "$@" ;;
    *) usage ;;
esac
