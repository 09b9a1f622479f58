"""The real KubeRay operator in the test cluster: its CRDs, its ClusterRole, the operator process.

The operator authenticates as the user ``kuberay-operator`` (a client certificate) bound to
the ClusterRole that KubeRay ships (``config/rbac/role.yaml``), so it can do no more than it
can in a real installation. Its CRDs are the ones of the same module version.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

from .controlplane import ControlPlane, free_ports
from .kubeconfig import write_kubeconfig

OPERATOR_USER = "kuberay-operator"


def kubectl(cp: ControlPlane, *args: str, stdin: str | None = None) -> str:
    out = subprocess.run(
        [str(cp.bins / "kubectl"), f"--kubeconfig={cp.root / 'kubeconfig'}", *args],
        input=stdin,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed: {out.stderr.strip()}")
    return out.stdout


def start_operator(cp: ControlPlane, state: dict[str, Any], progress: Callable[[str], None]) -> None:
    assets = cp.bins.parent
    progress("installing KubeRay's CRDs and ClusterRole")
    for crd in sorted((assets / "kuberay-crds").glob("*.yaml")):
        kubectl(cp, "apply", "--server-side", "-f", str(crd))
    kubectl(cp, "apply", "--server-side", "-f", str(assets / "kuberay-rbac" / "role.yaml"))
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "kuberay-operator"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "kuberay-operator"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": OPERATOR_USER}],
    }
    kubectl(cp, "apply", "--server-side", "-f", "-", stdin=json.dumps(binding))
    kubectl(cp, "wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    cert = cp.pki.issue("kuberay-operator", OPERATOR_USER)
    kc = write_kubeconfig(cp.root / "kuberay-operator.kubeconfig", state["server"], cp.pki.ca.cert, cert=cert)
    metrics, probe = free_ports(2)
    progress("starting the KubeRay operator")
    cp._spawn(
        "kuberay-operator",
        [str(cp.bins / "kuberay-operator"), f"--kubeconfig={kc}", "--enable-leader-election=false"]
        + [f"--metrics-addr=127.0.0.1:{metrics}", f"--health-probe-bind-address=127.0.0.1:{probe}"]
        + ["--log-stdout-encoder=console"],
    )
    state["pids"]["kuberay-operator"] = cp.procs["kuberay-operator"].pid
    _wait_healthy(cp, probe)


def _wait_healthy(cp: ControlPlane, port: int, timeout: float = 60.0) -> None:
    import urllib.request  # noqa: PLC0415

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cp._check_alive()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(
        f"the KubeRay operator was not ready within {timeout:.0f} s; see {Path(cp.logs) / 'kuberay-operator.log'}"
    )
