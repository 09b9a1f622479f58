#!/usr/bin/env bash
# The README's test command: install everything, lint, then run the whole suite
# (slow end-to-end tests included).
#
#   bash scripts/test.sh                   lint, the quick tests (in parallel), then the slow ones
#   bash scripts/test.sh -m "not slow" ... lint and the quick tests only (in parallel)
#   bash scripts/test.sh ARGS...           lint, then pytest ARGS (one process)
#
# The slow tests run on two workers (RAYSPAWNER_SLOW_TEST_WORKERS, default 2; 1 runs them in
# one process): every real-Ray test on one of them, one after another (two Ray clusters booting
# at once on 2 cores missed Ray's fixed start-up windows), and the other slow tests beside them
# at a lower CPU priority (tests/conftest.py). The quick tests run first, on
# RAYSPAWNER_TEST_WORKERS (default 4), with the API-fault matrix on one worker.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --test
# the test cluster's binaries (built by install.sh; this only prints their directory)
bin_dir=$(bash testcluster/build.sh)
export PATH="$PWD/.venv/bin:$bin_dir:$PATH" RAYSPAWNER_TESTCLUSTER_BIN="$bin_dir"
mkdir -p artifacts

# one real control plane for the whole run (tests isolate by namespace), with the KubeRay
# operator, a sim node and a process node (real processes, for the real-Ray tests); stopped,
# with everything it made, however the run ends
cluster_parent=$(mktemp -d /var/tmp/rayspawner-testcluster.XXXXXX)
export RAYSPAWNER_TESTCLUSTER_DIR="$cluster_parent/cluster"
stop_cluster() {
  .venv/bin/python -m testcluster down --dir "$RAYSPAWNER_TESTCLUSTER_DIR" || true
  rmdir "$cluster_parent" 2>/dev/null || true
}
trap stop_cluster EXIT
echo "== test cluster (Kubernetes v1.37.2, KubeRay operator)"
.venv/bin/python -m testcluster up --dir "$RAYSPAWNER_TESTCLUSTER_DIR" --node sim --node process --kuberay

echo "== lint (ruff check, ruff format --check)"
.venv/bin/ruff check .
.venv/bin/ruff format --check .

# pytest, where "no tests collected" (exit 5) is a failure
run_pytest() {
  local name=$1
  shift
  set +e
  .venv/bin/python -m pytest -p no:cacheprovider -ra --durations=15 --junitxml="artifacts/junit-$name.xml" "$@"
  local rc=$?
  set -e
  if [ $rc -eq 5 ]; then
    echo "pytest collected no tests ($name): failing" >&2
    return 1
  fi
  return $rc
}

quick_workers=${RAYSPAWNER_TEST_WORKERS:-4}
slow_workers=${RAYSPAWNER_SLOW_TEST_WORKERS:-2}
if [ $# -eq 0 ]; then
  echo "== quick tests ($quick_workers in parallel)"
  run_pytest quick -m "not slow" -n "$quick_workers" --dist loadgroup
  echo "== slow tests (real JupyterHub, Ray, Chromium)"
  if [ "$slow_workers" -gt 1 ]; then
    run_pytest slow -m slow -n "$slow_workers" --dist loadgroup
  else
    run_pytest slow -m slow
  fi
elif [ $# -ge 2 ] && [ "$1" = "-m" ] && [ "$2" = "not slow" ]; then
  shift 2
  run_pytest quick -m "not slow" -n "$quick_workers" --dist loadgroup "$@"
else
  run_pytest custom "$@"
fi
