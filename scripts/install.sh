#!/usr/bin/env bash
# Install what rayspawner's demo and tests need on a fresh Debian-like machine:
# a venv with rayspawner and its test extras, configurable-http-proxy (npm),
# and (for tests) Chromium + ChromeDriver, iproute2 and iptables (apt). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=${1:-}

need_apt=()
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v npm >/dev/null 2>&1 || need_apt+=(nodejs npm)
if [ "$want_test" = "--test" ]; then
  command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
  # openssl makes the test cluster's certificates; iptables the process node's rule that
  # sends a pod's `kubernetes` Service connections to the API server (kube-proxy's part)
  command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
  command -v iptables >/dev/null 2>&1 || need_apt+=(iptables)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi
if ! command -v configurable-http-proxy >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then npm install -g --silent configurable-http-proxy; else sudo npm install -g --silent configurable-http-proxy; fi
fi
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
extra=local
[ "$want_test" = "--test" ] && extra=test
.venv/bin/pip install -q -e ".[$extra]" 2>&1 | grep -v "^WARNING: Location" || true
# packages Jupyter pulls in that more than double every Ray start (rayspawner/versions.py,
# SLOW_IMPORT_DISTRIBUTIONS, the one list); jsonschema works without them
slow=$(.venv/bin/python -c "from rayspawner.versions import SLOW_IMPORT_DISTRIBUTIONS as s; print(' '.join(s))")
.venv/bin/pip uninstall -y -q $slow 2>&1 | grep -v "^WARNING: Skipping" || true
.venv/bin/python -c "import rayspawner, ray, jupyterhub; print('rayspawner', rayspawner.__version__, '| ray', ray.__version__, '| jupyterhub', jupyterhub.__version__)"
if [ "$want_test" = "--test" ]; then
  # the real control plane (etcd, kube-apiserver, controller-manager, scheduler, kubectl) and the
  # KubeRay operator, built from their Go modules into a cache keyed by version (minutes when cold)
  bash testcluster/build.sh >/dev/null
fi
