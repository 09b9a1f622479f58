"""pytest fixtures for the real test cluster (registered from tests/conftest.py).

- ``test_cluster`` (session): the running cluster. ``scripts/test.sh`` starts one for the
  whole run and exports ``RAYSPAWNER_TESTCLUSTER_DIR``; without it, each pytest process
  (each xdist worker) starts its own in a temporary directory and stops it at the end.
- ``kube`` (function): a fresh namespace on the sim node, Pod Security ``restricted``
  enforced, with the hub's ServiceAccount ``hub`` bound to the shipped Roles
  (``jupyterhub_config/rbac/``), and a fault proxy in front of the API server whose
  ``kubeconfig_path`` authenticates as that ServiceAccount. Tests isolate by namespace.
- ``kube_factory(node="sim", rbac=[...], pss="restricted")``: the same with choices;
  ``kube_module``: one for a whole module. ``kube.namespace_for_hub()`` adds another namespace
  where the same hub account holds the same Roles (a hub that spawns into several namespaces,
  as KubeSpawner's ``enable_user_namespaces``): many cases behind one fault proxy.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml

from .client import Client
from .cluster import down, is_up, up
from .faultproxy import FaultProxy
from .kubeconfig import ssl_context
from .pki import Pki

REPO = Path(__file__).resolve().parent.parent
RBAC_DIR = REPO / "jupyterhub_config" / "rbac"
HUB_ROLES = ("role-pods.yaml", "role-kuberay.yaml")


@dataclass
class TestCluster:
    __test__ = False  # not a test class
    root: Path
    server: str
    kuberay: bool
    client: Client
    pki: Pki

    @property
    def kubeconfig_path(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def kubectl(self) -> str:
        """The kubectl built with this control plane (v1.37.2), whatever else is on PATH."""
        return str(Path(json.loads((self.root / "state.json").read_text())["bin"]) / "kubectl")


def open_cluster(root: Path) -> TestCluster:
    state = json.loads((root / "state.json").read_text())
    pki = Pki(root / "pki")
    admin = pki.issue("admin", "kubernetes-admin", ("system:masters",))
    return TestCluster(
        root, state["server"], bool(state.get("kuberay")), Client(state["server"], pki.ca.cert, admin), pki
    )


@pytest.fixture(scope="session")
def test_cluster() -> Iterator[TestCluster]:
    shared = os.environ.get("RAYSPAWNER_TESTCLUSTER_DIR")
    if shared and is_up(Path(shared)):
        yield open_cluster(Path(shared))
        return
    root = Path(tempfile.mkdtemp(prefix="testcluster-", dir="/var/tmp")) / "cluster"
    up(root, kuberay=True, nodes=("sim", "process"))  # as scripts/test.sh starts it
    try:
        yield open_cluster(root)
    finally:
        down(root, quiet=True)
        os.rmdir(root.parent)


@dataclass
class Kube:
    """One test's view of the cluster: its namespace, its hub identity, its fault proxy."""

    cluster: TestCluster
    ns: str
    proxy: FaultProxy
    kubeconfig_path: Path
    hub_user: str
    node: str = "sim"
    pss: str = "restricted"
    rbac: list[dict[str, Any]] | None = None
    extra_namespaces: list[str] = field(default_factory=list)
    volumes: list[tuple[str, Path]] = field(default_factory=list)

    def shared_claim(self, claim: str, node: str = "process", size: str = "1Gi") -> Path:
        """A ReadWriteMany PersistentVolumeClaim ``claim`` in the namespace, bound to a local
        PersistentVolume on ``node``'s machine (what an NFS or CephFS volume is to a cluster):
        the pods that mount the claim share its directory, which this returns; no other pod
        sees it (it lies in the cluster's directory, hidden from pods). Gone with the Kube."""
        pv = f"{self.ns}-{claim}"
        path = self.cluster.root / "volumes" / pv
        path.mkdir(parents=True)
        path.chmod(0o777)  # pods run as their securityContext's user, as on an NFS export
        self.volumes.append((pv, path))
        affinity = {"key": "testcluster.rayspawner.test/pods", "operator": "In", "values": [node]}
        self.create_object(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": pv},
                "spec": {
                    "capacity": {"storage": size},
                    "accessModes": ["ReadWriteMany"],
                    "storageClassName": "",
                    "persistentVolumeReclaimPolicy": "Retain",
                    "local": {"path": str(path)},
                    "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [affinity]}]}},
                    "claimRef": {"namespace": self.ns, "name": claim},
                },
            }
        )
        self.create_object(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": claim, "namespace": self.ns},
                "spec": {
                    "accessModes": ["ReadWriteMany"],
                    "storageClassName": "",
                    "volumeName": pv,
                    "resources": {"requests": {"storage": size}},
                },
            }
        )
        self.wait_for(
            lambda: (
                (self.get_object("persistentvolumeclaims", self.ns, claim).get("status") or {}).get("phase") == "Bound"
            ),
            what=f"claim {claim} bound",
        )
        return path

    def namespace_for_hub(self, prefix: str = "jhub") -> str:
        """A new namespace (same Pod Security and node) whose Roles bind this Kube's hub account."""
        c = self.cluster.client
        ns = c.create_namespace(prefix, pss=self.pss, node=self.node)
        self.extra_namespaces.append(ns)
        _bind_hub(c, ns, hub_rbac_documents() if self.rbac is None else self.rbac, subject_ns=self.ns)
        return ns

    @property
    def url(self) -> str:
        return self.proxy.url

    @property
    def faults(self) -> Any:
        return self.proxy.faults

    @property
    def request_log(self) -> list[tuple[str, str, str | None, str | None]]:
        return self.proxy.request_log

    def reset_request_log(self) -> None:
        self.proxy.reset_request_log()

    @property
    def open_watches(self) -> Any:
        return self.proxy.open_watches

    @property
    def kuberay(self) -> bool:
        return self.cluster.kuberay

    @property
    def admin_kubeconfig_path(self) -> Path:
        return self.cluster.kubeconfig_path

    def __getattr__(self, name: str) -> Any:
        # get_object, list_objects, create_object, patch_object, delete_object, wait_for, call
        return getattr(self.cluster.client, name)


def hub_rbac_documents(names: tuple[str, ...] = HUB_ROLES) -> list[dict[str, Any]]:
    """The Roles and RoleBindings of ``jupyterhub_config/rbac/<name>`` files, as shipped."""
    return [d for name in names for d in yaml.safe_load_all((RBAC_DIR / name).read_text()) if d]


def _bind_hub(client: Client, ns: str, docs: list[dict[str, Any]], subject_ns: str | None = None) -> None:
    """Create the documents in ``ns``, their ServiceAccount subjects moved to ``subject_ns``
    (default ``ns``; as an admin applying them with ``kubectl apply -n`` after editing the subject does)."""
    for doc in copy.deepcopy(docs):
        doc.setdefault("metadata", {})["namespace"] = ns
        for subject in doc.get("subjects") or []:
            if subject.get("kind") == "ServiceAccount":
                subject["namespace"] = subject_ns or ns
        client.create_object(doc)


def make_kube(
    cluster: TestCluster,
    workdir: Path,
    node: str = "sim",
    rbac: list[dict[str, Any]] | None = None,
    pss: str = "restricted",
) -> Kube:
    """A fresh namespace, the hub's account in it (``rbac``: its Roles and RoleBindings; default the
    shipped ones, for both backends) and a fault proxy. :func:`drop_kube` undoes it."""
    c = cluster.client
    ns = c.create_namespace("jhub", pss=pss, node=node)
    _bind_hub(c, ns, hub_rbac_documents() if rbac is None else rbac)
    token = c.service_account_token(ns, "hub")
    proxy = FaultProxy(cluster.server, ssl_context(cluster.pki.ca.cert)).start()
    kc = c.token_kubeconfig(workdir / f"hub-{ns}.kubeconfig", token, server=proxy.url, namespace=ns)
    return Kube(cluster, ns, proxy, kc, f"system:serviceaccount:{ns}:hub", node, pss, rbac)


def drop_kube(kube: Kube) -> None:
    kube.proxy.stop()
    for ns in [*kube.extra_namespaces, kube.ns]:
        kube.cluster.client.delete_namespace(ns)
    for pv, path in kube.volumes:
        kube.cluster.client.delete_object("persistentvolumes", None, pv)
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def kube_factory(test_cluster: TestCluster, tmp_path: Path) -> Iterator[Callable[..., Kube]]:
    made: list[Kube] = []

    def make(**kwargs: Any) -> Kube:
        made.append(make_kube(test_cluster, tmp_path, **kwargs))
        return made[-1]

    yield make
    for kube in made:
        drop_kube(kube)


@pytest.fixture
def kube(kube_factory: Callable[..., Kube]) -> Kube:
    return kube_factory()


@pytest.fixture(scope="module")
def kube_module(test_cluster: TestCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kube]:
    """One namespace for a whole module (a hub process the module's tests share)."""
    kube = make_kube(test_cluster, tmp_path_factory.mktemp("kube"))
    yield kube
    drop_kube(kube)
