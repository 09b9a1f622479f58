#!/usr/bin/env bash
# The README's test command: install everything, then run the whole suite
# (slow end-to-end tests included). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --test
export PATH="$PWD/.venv/bin:$PATH"
mkdir -p artifacts
set +e
.venv/bin/python -m pytest -p no:cacheprovider -ra --durations=15 --junitxml=artifacts/junit.xml "$@"
rc=$?
set -e
if [ $rc -eq 5 ]; then
  echo "pytest collected no tests: failing" >&2
  exit 1
fi
exit $rc
