"""Bring a test cluster up in a directory, and down again (``python -m testcluster``).

``up`` starts the control plane, the node agent and (with ``kuberay=True``) the KubeRay
operator, records every process in ``DIR/state.json`` and returns once a Node is Ready and
the controllers have made the ``default`` ServiceAccount. ``down`` stops them all (the node
agent first, so that it removes its pods' namespaces, veths and bridge) and removes DIR.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable

from .controlplane import ControlPlane, bin_dir
from .kubeconfig import https_request

REPO = Path(__file__).resolve().parent.parent
STATE = "state.json"


def _log(msg: str) -> None:
    print(f"testcluster: {msg}", file=sys.stderr, flush=True)


def is_up(root: Path) -> bool:
    state = root / STATE
    if not state.exists():
        return False
    pids = json.loads(state.read_text()).get("pids", {})
    return bool(pids) and all(_alive(p) for p in pids.values())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait(what: str, check: Callable[[], bool], timeout: float, alive: Callable[[], None]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive()
        if check():
            return
        time.sleep(0.25)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


def node_name(mode: str) -> str:
    return f"{mode}-node"


def up(
    root: Path, kuberay: bool = False, nodes: tuple[str, ...] = ("process",), progress: Callable[[str], None] = _log
) -> Path:
    """Start a cluster in ``root`` with one node agent per mode in ``nodes`` ("process",
    "sim"); returns the admin kubeconfig's path. A node is labelled ``client.NODE_LABEL=<mode>``."""
    root = root.resolve()
    if is_up(root):
        raise RuntimeError(f"a test cluster is already up in {root}: run 'python -m testcluster down --dir {root}'")
    if root.exists() and any(root.iterdir()):
        raise RuntimeError(f"{root} is not empty: give an empty or new directory")
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    bins = bin_dir()
    cp = ControlPlane(root, bins)
    state: dict[str, Any] = {"kuberay": kuberay, "nodes": list(nodes), "bin": str(bins)}
    try:
        state.update(cp.start(progress))
        (root / STATE).write_text(json.dumps(state))
        ca, admin = cp.pki.ca.cert, cp.pki.issue("admin", "kubernetes-admin", ("system:masters",))

        def get(path: str) -> Any:
            code, body = https_request("GET", state["server"] + path, ca, admin)
            return json.loads(body) if code == 200 else None

        _wait(
            "the default ServiceAccount",
            lambda: get("/api/v1/namespaces/default/serviceaccounts/default"),
            60,
            cp._check_alive,
        )
        if "process" in nodes:
            _bind_node_proxier(state["server"], ca, admin)
        for mode in nodes:
            progress(f"starting the node agent ({mode})")
            argv = [sys.executable, "-m", "testcluster.node", "--dir", str(root), "--mode", mode]
            cp._spawn(f"node-agent-{mode}", argv + ["--name", node_name(mode)], cwd=REPO)
            state["pids"][f"node-agent-{mode}"] = cp.procs[f"node-agent-{mode}"].pid
        (root / STATE).write_text(json.dumps(state))
        for mode in nodes:
            path = f"/api/v1/nodes/{node_name(mode)}"
            _wait(f"node {node_name(mode)} to be Ready", lambda p=path: _node_ready(get(p)), 60, cp._check_alive)
        if kuberay:
            from .kuberay import start_operator  # noqa: PLC0415

            start_operator(cp, state, progress)
            (root / STATE).write_text(json.dumps(state))
    except BaseException:
        down(root, quiet=True)
        raise
    progress(f"up in {time.monotonic() - t0:.1f} s: KUBECONFIG={root / 'kubeconfig'}")
    return root / "kubeconfig"


def _bind_node_proxier(server: str, ca: Path, admin: Any) -> None:
    """kube-proxy's ClusterRole for the nodes (group ``system:nodes``): the process node does
    kube-proxy's and cluster DNS's part for its pods (``node/services.py``), so it reads what
    kube-proxy reads (Services, EndpointSlices), and nothing more."""
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "testcluster:node-proxier"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:node-proxier"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:nodes"}],
    }
    url = server + "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings"
    code, body = https_request("POST", url, ca, admin, binding)
    if code not in (201, 409):
        raise RuntimeError(f"binding system:node-proxier to the nodes: HTTP {code}: {body[:300]!r}")


def _node_ready(node: Any) -> bool:
    conds = ((node or {}).get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


def _stop(pid: int, timeout: float) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def down(root: Path, quiet: bool = False) -> None:
    """Stop every process of the cluster in ``root`` and remove the directory."""
    root = root.resolve()
    state_file = root / STATE
    if state_file.exists():
        pids: dict[str, int] = json.loads(state_file.read_text()).get("pids", {})
        # the node agent first: it stops its pods and removes their sandboxes
        order = [
            "node-agent-process",
            "node-agent-sim",
            "kuberay-operator",
            "kube-controller-manager",
            "kube-scheduler",
            "kube-apiserver",
            "etcd",
        ]
        for name in sorted(pids, key=lambda n: order.index(n) if n in order else -1):
            if not quiet:
                _log(f"stopping {name}")
            _stop(pids[name], 30 if name.startswith("node-agent") else 10)
    elif not quiet:
        _log(f"no cluster state in {root}")
    if root.exists():
        shutil.rmtree(root, ignore_errors=True)
