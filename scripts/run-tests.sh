#!/usr/bin/env bash
# Run the test suite, doing all of its set-up first:
#
#   scripts/run-tests.sh [pytest arguments...]
#
# 1. scripts/_bootstrap.sh creates .venv and installs the project.
# 2. scripts/ipfs-test-node.sh installs the IPFS test daemon (npm).
#    scripts/browser-setup.sh installs Debian's chromium and playwright for
#    the dashboard's browser tests, which skip when either is missing.
# 3. The rest runs in a new network namespace that has only a loopback
#    interface (unshare --net --map-root-user), so nothing a test starts can
#    reach another machine. There the daemon starts in a temporary
#    directory, WEALL_TEST_IPFS_API names it, and pytest runs with the given
#    arguments.
#
# The exit status is pytest's. Where unshare cannot create the namespace,
# pytest runs without the daemon and the tests marked ipfs are skipped.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IPFS_API_PORT=5001

log() {
    echo "run-tests: $*" >&2
}

# Bring lo up and check that it is the only interface. Uses ip(8) when it is
# installed, and Python's ioctl interface otherwise.
setup_loopback() {
    if command -v ip >/dev/null; then
        ip link set lo up
    fi
    "$ROOT/.venv/bin/python" - <<'PY'
import fcntl
import socket
import struct
import sys

names = [name for _, name in socket.if_nameindex()]
if names != ["lo"]:
    sys.exit(f"run-tests: expected only the loopback interface, found {names}")
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
    request = struct.pack("16sH14s", b"lo", 0, b"")
    flags = struct.unpack("16sH14s", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
    if not flags & IFF_UP:
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH14s", b"lo", flags | IFF_UP, b""))
PY
    if command -v ip >/dev/null && [[ "$(ip -o link | cut -d: -f2 | tr -d ' ')" != lo ]]; then
        log "expected only lo in the namespace, ip -o link lists:"
        ip -o link >&2
        exit 1
    fi
}

DAEMON_PID=""
WORKDIR=""

cleanup() {
    if [[ -n "$DAEMON_PID" ]]; then
        "$ROOT/scripts/ipfs-test-node.sh" stop "$DAEMON_PID"
    fi
    if [[ -n "$WORKDIR" ]]; then
        rm -rf "$WORKDIR"
    fi
}

run_in_namespace() {
    setup_loopback
    trap cleanup EXIT
    WORKDIR="$(mktemp -d "${TMPDIR:-/tmp}/weall-ipfs-test.XXXXXX")"
    local started=$SECONDS
    DAEMON_PID="$("$ROOT/scripts/ipfs-test-node.sh" start "$WORKDIR" "$IPFS_API_PORT")"
    log "IPFS test daemon ready in $((SECONDS - started)) s"
    export WEALL_TEST_IPFS_API="http://127.0.0.1:$IPFS_API_PORT"
    local status=0
    started=$SECONDS
    "$ROOT/.venv/bin/python" -m pytest "$@" || status=$?
    log "pytest finished in $((SECONDS - started)) s with status $status"
    return "$status"
}

if [[ "${WEALL_TEST_NETNS:-}" == 1 ]]; then
    cd "$ROOT"
    run_in_namespace "$@"
    exit $?
fi

cd "$ROOT"
bash "$ROOT/scripts/_bootstrap.sh"
"$ROOT/scripts/ipfs-test-node.sh" install
bash "$ROOT/scripts/browser-setup.sh"
if unshare --net --map-root-user true 2>/dev/null; then
    WEALL_TEST_NETNS=1 exec unshare --net --map-root-user "$ROOT/scripts/run-tests.sh" "$@"
fi
log "unshare --net --map-root-user is unavailable; running without the IPFS daemon, so the ipfs tests are skipped"
exec "$ROOT/.venv/bin/python" -m pytest "$@"
