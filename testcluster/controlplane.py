"""The real control plane on loopback: etcd, kube-apiserver, kube-controller-manager, kube-scheduler.

The binaries come from ``testcluster/build.sh`` (Kubernetes v1.37.2, built from its Go
modules). The API server runs with TLS, the Node and RBAC authorizers, the default
admission plugins plus NodeRestriction, PodSecurity (namespaces opt in to ``restricted``
by label), PodNodeSelector (a namespace's annotation picks the node its pods run on) and
bound ServiceAccount tokens. The controller manager runs its default controllers (garbage
collector, Deployment/ReplicaSet, EndpointSlice, ServiceAccount and token, namespace, PV
binder, ...), each with its own ServiceAccount credentials.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from .kubeconfig import https_get, write_kubeconfig
from .pki import Pki

log = logging.getLogger("testcluster")

HERE = Path(__file__).resolve().parent
SERVICE_CIDR = "10.96.0.0/12"
API_SERVICE_IP = "10.96.0.1"
CLUSTER_DOMAIN = "cluster.local"


def bin_dir() -> Path:
    """The cache directory holding the built binaries (builds whatever is missing)."""
    env = os.environ.get("RAYSPAWNER_TESTCLUSTER_BIN")
    if env:
        return Path(env)
    out = subprocess.run(["bash", str(HERE / "build.sh")], check=True, stdout=subprocess.PIPE, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


def free_ports(n: int) -> list[int]:
    """n distinct free loopback ports (all sockets held until every one is chosen)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


PSA_CONFIG = """\
apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
- name: PodSecurity
  configuration:
    apiVersion: pod-security.admission.config.k8s.io/v1
    kind: PodSecurityConfiguration
    defaults:
      enforce: privileged
      enforce-version: latest
      warn: restricted
      warn-version: latest
    exemptions:
      namespaces: [kube-system]
"""


class ControlPlane:
    """Starts the four control-plane processes for one cluster directory."""

    def __init__(self, root: Path, bins: Path) -> None:
        self.root = root
        self.bins = bins
        self.pki = Pki(root / "pki")
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def _spawn(self, name: str, argv: list[str], cwd: Path | None = None) -> None:
        out = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
        self.procs[name] = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, cwd=cwd
        )
        out.close()

    def _check_alive(self) -> None:
        for name, p in self.procs.items():
            if p.poll() is not None:
                tail = (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {p.returncode} while starting; its log ends:\n{tail}")

    def start(self, progress: Any = print) -> dict[str, Any]:
        etcd_client, etcd_peer, api_port = free_ports(3)
        p = self.pki
        serving = p.issue(
            "apiserver",
            "kube-apiserver",
            dns=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc")
            + (f"kubernetes.default.svc.{CLUSTER_DOMAIN}",),
            ips=("127.0.0.1", API_SERVICE_IP),
            server=True,
        )
        kubelet_client = p.issue(
            "apiserver-kubelet-client", "kube-apiserver-kubelet-client", ("kubeadm:cluster-admins",)
        )
        admin = p.issue("admin", "kubernetes-admin", ("system:masters",))
        kcm = p.issue("controller-manager", "system:kube-controller-manager")
        sched = p.issue("scheduler", "system:kube-scheduler")
        sa = p.service_account_key()
        server = f"https://127.0.0.1:{api_port}"
        write_kubeconfig(self.root / "kubeconfig", server, p.ca.cert, cert=admin)
        write_kubeconfig(self.root / "controller-manager.kubeconfig", server, p.ca.cert, cert=kcm)
        write_kubeconfig(self.root / "scheduler.kubeconfig", server, p.ca.cert, cert=sched)
        (self.root / "admission.yaml").write_text(PSA_CONFIG)

        progress("starting etcd")
        peer = f"http://127.0.0.1:{etcd_peer}"
        self._spawn(
            "etcd",
            [str(self.bins / "etcd"), "--data-dir", str(self.root / "etcd"), "--name", "default"]
            + ["--listen-client-urls", f"http://127.0.0.1:{etcd_client}"]
            + ["--advertise-client-urls", f"http://127.0.0.1:{etcd_client}"]
            + ["--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer]
            + ["--initial-cluster", f"default={peer}", "--unsafe-no-fsync", "--log-level", "warn"],
        )
        progress("starting kube-apiserver")
        self._spawn(
            "kube-apiserver",
            [str(self.bins / "kube-apiserver")]
            + [f"--etcd-servers=http://127.0.0.1:{etcd_client}", "--bind-address=127.0.0.1"]
            + [f"--secure-port={api_port}", "--advertise-address=127.0.0.1", "--endpoint-reconciler-type=none"]
            + [f"--tls-cert-file={serving.cert}", f"--tls-private-key-file={serving.key}"]
            + [f"--client-ca-file={p.ca.cert}", "--authorization-mode=Node,RBAC"]
            + [
                "--enable-admission-plugins=NodeRestriction,PodNodeSelector",
                f"--admission-control-config-file={self.root}/admission.yaml",
            ]
            + [f"--service-cluster-ip-range={SERVICE_CIDR}", f"--service-account-key-file={sa.cert}"]
            + [f"--service-account-signing-key-file={sa.key}"]
            + [f"--service-account-issuer=https://kubernetes.default.svc.{CLUSTER_DOMAIN}"]
            + [f"--kubelet-client-certificate={kubelet_client.cert}", f"--kubelet-client-key={kubelet_client.key}"]
            + [f"--kubelet-certificate-authority={p.ca.cert}", "--kubelet-preferred-address-types=InternalIP"]
            + ["--profiling=false", "--v=1"],
        )
        self._wait_ready(server, admin)
        progress("starting kube-controller-manager and kube-scheduler")
        self._spawn(
            "kube-controller-manager",
            [str(self.bins / "kube-controller-manager"), f"--kubeconfig={self.root}/controller-manager.kubeconfig"]
            + [f"--authentication-kubeconfig={self.root}/controller-manager.kubeconfig"]
            + [f"--authorization-kubeconfig={self.root}/controller-manager.kubeconfig"]
            + ["--bind-address=127.0.0.1", f"--secure-port={free_ports(1)[0]}", "--leader-elect=false"]
            + [f"--service-account-private-key-file={sa.key}", f"--root-ca-file={p.ca.cert}"]
            + ["--use-service-account-credentials=true", f"--cluster-signing-cert-file={p.ca.cert}"]
            + [f"--cluster-signing-key-file={p.ca.key}", "--controllers=*", "--v=1"],
        )
        self._spawn(
            "kube-scheduler",
            [str(self.bins / "kube-scheduler"), f"--kubeconfig={self.root}/scheduler.kubeconfig"]
            + [f"--authentication-kubeconfig={self.root}/scheduler.kubeconfig"]
            + [f"--authorization-kubeconfig={self.root}/scheduler.kubeconfig"]
            + ["--bind-address=127.0.0.1", f"--secure-port={free_ports(1)[0]}", "--leader-elect=false", "--v=1"],
        )
        return {"server": server, "pids": {k: v.pid for k, v in self.procs.items()}}

    def _wait_ready(self, server: str, admin: Any, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                code, body = https_get(f"{server}/readyz", self.pki.ca.cert, admin)
                if code == 200:
                    return
                last = f"{code} {body[:300]!r}"
            except OSError as e:
                last = str(e)
            time.sleep(0.3)
        raise RuntimeError(f"kube-apiserver was not ready within {timeout:.0f} s (last answer: {last})")
