"""RayClusterSpec: everything about one user-server's Ray cluster, validated.

It is built once per spawn by :func:`rayspawner.options.resolve_spec` from the
spawner's configuration (after the chosen profile is applied) and is the only
input of the pure manifest builders and of the backends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import naming
from .netpeers import DEFAULT_DNS_PEERS
from .quantities import format_cpu, format_memory

# The ports every Ray head listens on (stable: the NetworkPolicy and Service use them).
GCS_PORT = 6379
CLIENT_PORT = 10001
DASHBOARD_PORT = 8265
METRICS_PORT = 8080
DASHBOARD_AGENT_PORT = 52365
#: Ray refuses an object store smaller than this (``ray start --object-store-memory``)
MIN_OBJECT_STORE_BYTES = 78 * 2**20
RAY_PORTS = {
    "gcs": GCS_PORT,
    "client": CLIENT_PORT,
    "dashboard": DASHBOARD_PORT,
    "metrics": METRICS_PORT,
}
# Every other port a Ray node listens on, pinned on every node (head, workers and the
# notebook's own node), so the NetworkPolicies can name them instead of opening all ports.
NODE_MANAGER_PORT = 6380
OBJECT_MANAGER_PORT = 6381
DASHBOARD_AGENT_GRPC_PORT = 6382
RUNTIME_ENV_AGENT_PORT = 6383
#: one port per Ray worker process (task/actor); outside Ray Client's 10001, as Ray requires
MIN_WORKER_PORT = 10002
MAX_WORKER_PORT = 10999


@dataclass(frozen=True)
class Resources:
    """Per-node resources; requests equal limits (Ray sizes itself from them)."""

    cpu_millis: int
    memory_bytes: int
    gpu: int = 0

    @property
    def cpu(self) -> str:
        return format_cpu(self.cpu_millis)

    @property
    def memory(self) -> str:
        return format_memory(self.memory_bytes)

    @property
    def ray_num_cpus(self) -> int:
        """Whole CPUs Ray schedules on (at least 1)."""
        return max(1, self.cpu_millis // 1000)


@dataclass(frozen=True)
class WorkerGroup:
    name: str
    replicas: int
    min_replicas: int
    max_replicas: int
    resources: Resources


@dataclass(frozen=True)
class ClusterRef:
    """Enough to find (and delete) a cluster: what the hub keeps in its state."""

    name: str
    namespace: str
    backend: str = ""


@dataclass(frozen=True)
class RayClusterSpec:
    name: str
    namespace: str
    username: str
    servername: str
    image: str
    notebook_image: str
    head: Resources
    worker_groups: tuple[WorkerGroup, ...]
    ray_version: str
    image_pull_policy: str | None = None
    autoscaling: bool = False
    idle_timeout_seconds: int = 60
    upscaling_mode: str = "Default"
    auth_enabled: bool = True
    #: the token Secret is created with the cluster, owned by the notebook pod from the start
    #: (ray_orphan_sweep_secrets = "by-name": never ownerless, so no sweep has to list Secrets)
    secret_owned_at_create: bool = False
    network_policy: bool = True
    extra_ingress: tuple[dict[str, Any], ...] = ()
    extra_egress: tuple[dict[str, Any], ...] = ()
    #: NetworkPolicyPeers the Ray pods may send DNS to (never empty: that would mean any)
    dns_peers: tuple[dict[str, Any], ...] = DEFAULT_DNS_PEERS
    #: KubeRay autoscaling: CIDRs of the API server for the head's egress; () = any address
    api_server_cidrs: tuple[str, ...] = ()
    notebook_selector: dict[str, str] = field(default_factory=dict)
    cluster_domain: str = "cluster.local"
    gpu_resource_name: str = "nvidia.com/gpu"
    object_store_fraction: float = 0.3
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[dict[str, Any], ...] = ()
    extra_env: dict[str, str] = field(default_factory=dict)
    volumes: tuple[dict[str, Any], ...] = ()
    volume_mounts: tuple[dict[str, Any], ...] = ()
    extra_labels: dict[str, str] = field(default_factory=dict)
    pod_annotations: dict[str, str] = field(default_factory=dict)
    version_check: str = "error"
    #: "driver" (the notebook is a zero-resource node of the cluster) or "client" (Ray Client)
    connect_mode: str = "driver"
    notebook_object_store_bytes: int = 256 * 2**20
    #: policy types that already isolate the notebook pod (e.g. Zero-to-JupyterHub's singleuser
    #: NetworkPolicy), which the notebook-side policy must open for Ray traffic; () = none
    notebook_policy_types: tuple[str, ...] = ("Ingress", "Egress")

    def ref(self, backend: str = "") -> ClusterRef:
        return ClusterRef(self.name, self.namespace, backend)

    # --- derived names (one home: rayspawner.naming) ---
    @property
    def head_service(self) -> str:
        return naming.head_service(self.name)

    @property
    def head_pod(self) -> str:
        return naming.head_pod(self.name)

    @property
    def secret_name(self) -> str:
        return naming.token_secret(self.name)

    @property
    def network_policy_name(self) -> str:
        return naming.network_policy(self.name)

    @property
    def driver_mode(self) -> bool:
        return self.connect_mode == "driver"

    @property
    def head_host(self) -> str:
        """The head Service's fully qualified DNS name."""
        return f"{self.head_service}.{self.namespace}.svc.{self.cluster_domain}"

    @property
    def labels(self) -> dict[str, str]:
        labels = dict(self.extra_labels)
        labels.update(naming.cluster_labels(self.name, self.username, self.servername))
        return labels

    @property
    def total(self) -> Resources:
        """Head plus every worker at its maximum replicas."""
        cpu, mem, gpu = self.head.cpu_millis, self.head.memory_bytes, self.head.gpu
        for g in self.worker_groups:
            cpu += g.resources.cpu_millis * g.max_replicas
            mem += g.resources.memory_bytes * g.max_replicas
            gpu += g.resources.gpu * g.max_replicas
        return Resources(cpu, mem, gpu)

    @property
    def desired_workers(self) -> int:
        return sum(g.replicas for g in self.worker_groups)
