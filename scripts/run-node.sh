#!/usr/bin/env bash
# Run the node with every actor supervised, installing what it needs first.
#
#   scripts/run-node.sh [weall supervise options...]
#
# Settings come from WEALL_* variables (see weall/config.py); with none
# set, the node runs in dev mode on the embedded defaults, with its data
# under ./data.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/_bootstrap.sh"
exec "$ROOT/.venv/bin/weall" supervise "$@"
