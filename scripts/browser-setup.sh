#!/usr/bin/env bash
# Install what the dashboard's browser tests need, each part only if missing:
#
#   scripts/browser-setup.sh
#
# 1. Debian's chromium package, which puts the browser at /usr/bin/chromium.
#    Installing it needs root, so for another user the script prints the
#    command to run instead.
# 2. The Python package playwright, into .venv. Playwright's own browser
#    download is never used: the tests start /usr/bin/chromium through
#    executable_path.
#
# Exits 0 even when a part cannot be installed, because the browser tests
# then skip with the reason, and the rest of the suite still runs.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV_PYTHON="$ROOT/.venv/bin/python"
CHROMIUM=/usr/bin/chromium

log() {
    echo "browser-setup: $*" >&2
}

install_chromium() {
    if [[ -x "$CHROMIUM" ]]; then
        return 0
    fi
    if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null; then
        log "$CHROMIUM is missing; as root run: apt-get install chromium"
        return 0
    fi
    log "installing chromium with apt-get"
    if ! { apt-get update -qq && apt-get install -y -qq chromium >&2; }; then
        log "apt-get install chromium failed; the browser tests will be skipped"
    fi
}

install_playwright() {
    if [[ ! -x "$VENV_PYTHON" ]]; then
        log "$VENV_PYTHON is missing; run scripts/_bootstrap.sh first"
        return 0
    fi
    if "$VENV_PYTHON" -c 'import playwright' 2>/dev/null; then
        return 0
    fi
    log "installing the playwright package into .venv"
    if ! "$VENV_PYTHON" -m pip install --disable-pip-version-check --quiet playwright >&2; then
        log "pip install playwright failed; the browser tests will be skipped"
    fi
}

install_chromium
install_playwright
