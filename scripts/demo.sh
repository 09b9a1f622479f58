#!/usr/bin/env bash
# The README's first command: install, then run the local demo hub with the Ray profile.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export PATH="$PWD/.venv/bin:$PATH"
exec .venv/bin/python -m rayspawner demo "$@"
