#!/usr/bin/env bash
# Create .venv and install the project with its dev extras into it.
#
# Safe to run repeatedly: pip runs only when pyproject.toml changed since the
# last successful install, which .venv/.pyproject.sha256 records. Needs only
# python3 (with its venv module) and access to the package index.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
STAMP="$VENV/.pyproject.sha256"

log() {
    echo "bootstrap: $*" >&2
}

create_venv() {
    command -v python3 >/dev/null || { log "python3 not found; install Python 3.11 or newer"; exit 1; }
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || { log "python3 is $(python3 --version 2>&1); the node needs 3.11 or newer"; exit 1; }
    if python3 -m venv "$VENV"; then
        return 0
    fi
    # Debian ships ensurepip separately, in python3-venv.
    if [[ "${CI:-}" == true && "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
        log "installing python3-venv with apt-get"
        apt-get update -qq && apt-get install -y -qq python3-venv >&2
        rm -rf "$VENV"
        python3 -m venv "$VENV"
        return 0
    fi
    log "python3 -m venv failed; on Debian or Ubuntu run: apt-get install python3-venv"
    exit 1
}

if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating $VENV"
    create_venv
fi

wanted="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$wanted" ]]; then
    log "installing the project into $VENV (pyproject.toml changed)"
    "$VENV/bin/python" -m pip install --disable-pip-version-check --quiet -e "$ROOT[dev]" >&2
    echo "$wanted" >"$STAMP"
fi
