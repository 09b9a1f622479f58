"""What driver mode adds to the notebook pod, and the notebook side of the NetworkPolicy.

Driver mode makes the notebook pod a node of its own Ray cluster that offers no
resources, so the kernel's ``ray.init()`` is a direct driver (Ray Data, Train and Tune
work; Ray Client does not run Ray Data). The design, and why:

- **A native sidecar** (an init container with ``restartPolicy: Always``, Kubernetes >=
  1.29) named :data:`NOTEBOOK_NODE_CONTAINER` runs ``ray start --address=<head>:6379
  --block --num-cpus=0 --num-gpus=0 --memory=0`` from the notebook's own image (so its
  Ray and Python match the kernel's). It has no startup probe, so the notebook container
  starts right after it, never later; it waits for the head's GCS itself and keeps
  rejoining (the kubelet restarts it whenever ``ray start --block`` exits, e.g. after
  the head was recreated). Its readiness is its raylet's health, which the spawn
  progress reports as "joined". Running Ray inside the notebook container instead
  would tie the raylet to the user's server process and share its restarts and limits.
- **Shared sockets and store**: the sidecar and the notebook container mount the same
  ``/tmp/ray`` (raylet and plasma sockets, session logs) and ``/dev/shm`` (the object
  store, :attr:`RayClusterSpec.notebook_object_store_bytes`) volumes.
- **shareProcessNamespace**: a driver finds its node's raylet by listing processes
  (``ray._private.services.find_node_ids``), so the notebook container must see the
  sidecar's processes.
- **Zero resources**: ordinary tasks (1 CPU) never land on the notebook; tasks and
  actors that ask for *zero* resources can, as on any node. The node carries the Ray
  label :data:`NOTEBOOK_RAY_LABEL` for placement rules.
"""

from __future__ import annotations

import shlex
from typing import Any

from .. import naming
from ..env import ray_node_env
from ..quantities import format_memory
from ..spec import GCS_PORT, RayClusterSpec
from . import common
from .common import Manifest, Owner

NOTEBOOK_NODE_CONTAINER = "ray-node"
#: the Ray node label of the notebook's own node (``ray start --labels``)
NOTEBOOK_RAY_LABEL = ("rayspawner/role", "notebook")
RAY_TMP_VOLUME, RAY_TMP_PATH = "ray-tmp", "/tmp/ray"
SHM_VOLUME, SHM_PATH = "ray-shm", "/dev/shm"
#: memory of the sidecar beyond its object store: raylet, dashboard and runtime-env agents
NODE_OVERHEAD_BYTES = 512 * 2**20
NODE_RESOURCES: Manifest = {"cpu_request": "100m", "cpu_limit": "1"}


def node_command(spec: RayClusterSpec) -> list[str]:
    """Wait for the head's GCS, then join as a node that offers nothing to schedule on."""
    params = {
        "address": f"{spec.head_host}:{GCS_PORT}",
        "num-cpus": "0",
        "num-gpus": "0",
        "memory": "0",
        "object-store-memory": str(spec.notebook_object_store_bytes),
        "labels": "=".join(NOTEBOOK_RAY_LABEL),
        **common.node_port_params(),
    }
    start = ["ray", "start", "--block", "--disable-usage-stats", *(f"--{k}={v}" for k, v in params.items())]
    # the pod IP, so that Ray and the kernel's driver agree on this node's address
    return ["/bin/sh", "-c", common.wait_for_gcs(spec) + "exec " + shlex.join(start) + ' --node-ip-address="$POD_IP"']


def node_container(spec: RayClusterSpec, notebook: Manifest) -> Manifest:
    """The sidecar running the notebook's Ray node, from the notebook container's image,
    user and pull policy (``notebook`` is the notebook container, serialized)."""
    memory = format_memory(spec.notebook_object_store_bytes + NODE_OVERHEAD_BYTES)
    security = dict(common.CONTAINER_SECURITY_CONTEXT)
    for key in ("runAsUser", "runAsGroup"):  # the same user as the kernel: one owner for /tmp/ray
        value = (notebook.get("securityContext") or {}).get(key)
        if value is not None:
            security[key] = value
    container: Manifest = {
        "name": NOTEBOOK_NODE_CONTAINER,
        "image": notebook["image"],
        "restartPolicy": "Always",
        "command": node_command(spec),
        "env": [
            *ray_node_env(spec),
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "status.podIP"}}},
        ],
        "resources": {
            "requests": {"cpu": NODE_RESOURCES["cpu_request"], "memory": memory},
            "limits": {"cpu": NODE_RESOURCES["cpu_limit"], "memory": memory},
        },
        "securityContext": security,
        # polled often: the spawn waits for it (the kernel's first ray.init() needs this node)
        "readinessProbe": common.http_probe([common.RAYLET_HEALTH], period=2, failures=3, delay=2),
        "volumeMounts": [],
    }
    if notebook.get("imagePullPolicy"):
        container["imagePullPolicy"] = notebook["imagePullPolicy"]
    return container


def pod_additions(spec: RayClusterSpec, notebook: Manifest) -> tuple[Manifest, list[Manifest], list[Manifest]]:
    """What driver mode adds to the notebook pod, given its notebook container (serialized):
    the sidecar, the pod's new volumes and the notebook container's new volume mounts.
    The pod also needs ``shareProcessNamespace: true`` (see the module docstring).

    A volume the admin already mounts at ``/tmp/ray`` or ``/dev/shm`` in the notebook
    container is shared with the sidecar instead of being replaced.
    """
    sidecar = node_container(spec, notebook)
    mounts = {m["mountPath"]: m["name"] for m in notebook.get("volumeMounts") or []}
    volumes: list[Manifest] = []
    notebook_mounts: list[Manifest] = []
    wanted = (
        (RAY_TMP_PATH, RAY_TMP_VOLUME, {"emptyDir": {}}),
        (
            SHM_PATH,
            SHM_VOLUME,
            {"emptyDir": {"medium": "Memory", "sizeLimit": format_memory(spec.notebook_object_store_bytes)}},
        ),
    )
    for path, name, source in wanted:
        if path not in mounts:
            volumes.append({"name": name, **source})
            notebook_mounts.append({"name": name, "mountPath": path})
            mounts[path] = name
        sidecar["volumeMounts"].append({"name": mounts[path], "mountPath": path})
    return sidecar, volumes, notebook_mounts


def node_ready(pod: dict[str, Any] | None) -> bool:
    """Whether the notebook's Ray node (the sidecar) reports ready in the pod's status."""
    for cs in ((pod or {}).get("status") or {}).get("initContainerStatuses") or []:
        if cs.get("name") == NOTEBOOK_NODE_CONTAINER:
            return bool(cs.get("ready"))
    return False


def network_policy(spec: RayClusterSpec, owner: Owner | None) -> Manifest | None:
    """The notebook side: opens the notebook pod for exactly its own cluster's Ray traffic.

    NetworkPolicies are additive. Where another policy already isolates the notebook pod
    (Zero-to-JupyterHub's singleuser policy admits ingress only from the hub and proxy
    and, by default, no egress to private IPs), this one adds egress to its own Ray pods
    on :func:`common.notebook_to_cluster_ports` and, in driver mode, ingress from them on
    the notebook node's :func:`common.cluster_to_notebook_ports`. It only names the policy
    types in ``spec.notebook_policy_types`` (those already isolated), so it never isolates
    a notebook pod that was open. None when there is nothing to open.
    """
    if not spec.network_policy or not spec.notebook_selector:
        return None

    def same_cluster() -> Manifest:  # a fresh dict per use: YAML output without anchors
        return {"podSelector": {"matchLabels": {naming.LABEL_CLUSTER: spec.name}}}

    body: Manifest = {"podSelector": {"matchLabels": dict(spec.notebook_selector)}, "policyTypes": []}
    if "Ingress" in spec.notebook_policy_types and spec.driver_mode:
        body["policyTypes"].append("Ingress")
        body["ingress"] = [{"from": [same_cluster()], "ports": common.cluster_to_notebook_ports()}]
    if "Egress" in spec.notebook_policy_types:
        body["policyTypes"].append("Egress")
        body["egress"] = [{"to": [same_cluster()], "ports": common.notebook_to_cluster_ports(spec)}]
    if not body["policyTypes"]:
        return None
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": common.metadata(spec, naming.notebook_network_policy(spec.name), owner),
        "spec": body,
    }
