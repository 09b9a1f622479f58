"""Pieces shared by both Kubernetes backends: metadata, security, the token
Secret, the NetworkPolicy, resources and the version probe."""

from __future__ import annotations

import base64
import copy
from typing import Any

from .. import naming
from ..env import ray_node_env
from ..spec import (
    DASHBOARD_AGENT_GRPC_PORT,
    DASHBOARD_AGENT_PORT,
    MAX_WORKER_PORT,
    METRICS_PORT,
    MIN_WORKER_PORT,
    NODE_MANAGER_PORT,
    OBJECT_MANAGER_PORT,
    RAY_PORTS,
    RUNTIME_ENV_AGENT_PORT,
    RayClusterSpec,
    Resources,
)

Manifest = dict[str, Any]
Owner = dict[str, Any]

#: the head's "I have been ready once" marker (its readiness probe checks it)
READY_FILE = '"${TMPDIR:-/tmp}/rayspawner-head-ready"'


def owner_reference(pod_name: str, uid: str) -> Owner:
    """An ownerReference to the notebook pod: Kubernetes' garbage collector removes
    the Ray objects when that pod goes, even if the hub is dead.

    ``blockOwnerDeletion`` is left unset: it needs ``pods/finalizers`` update
    rights under OpenShift's OwnerReferencesPermissionEnforcement.
    """
    return {"apiVersion": "v1", "kind": "Pod", "name": pod_name, "uid": uid}


def metadata(spec: RayClusterSpec, name: str, owner: Owner | None, component: str | None = None) -> Manifest:
    labels = spec.labels
    if component:
        labels[naming.LABEL_COMPONENT] = component
    meta: Manifest = {"name": name, "namespace": spec.namespace, "labels": labels}
    if owner:
        meta["ownerReferences"] = [dict(owner)]
    return meta


POD_SECURITY_CONTEXT: Manifest = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
CONTAINER_SECURITY_CONTEXT: Manifest = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def template_metadata(spec: RayClusterSpec, labels: dict[str, str]) -> Manifest:
    """Metadata of a Ray pod (or pod template): its labels plus ``ray_extra_annotations``."""
    meta: Manifest = {"labels": dict(labels)}
    if spec.pod_annotations:
        meta["annotations"] = dict(spec.pod_annotations)
    return meta


def resources(spec: RayClusterSpec, res: Resources) -> Manifest:
    values: dict[str, Any] = {"cpu": res.cpu, "memory": res.memory}
    if res.gpu:
        values[spec.gpu_resource_name] = str(res.gpu)
    return {"requests": dict(values), "limits": dict(values)}


def object_store_bytes(spec: RayClusterSpec, res: Resources) -> int:
    return int(res.memory_bytes * spec.object_store_fraction)


def shm_volume(spec: RayClusterSpec, res: Resources) -> Manifest:
    """/dev/shm as memory-backed emptyDir sized for the object store."""
    return {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": str(object_store_bytes(spec, res))}}


SHM_MOUNT: Manifest = {"name": "dshm", "mountPath": "/dev/shm"}


def pod_spec_extras(spec: RayClusterSpec) -> Manifest:
    """Scheduling and hardening fields common to every Ray pod."""
    extras: Manifest = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": dict(POD_SECURITY_CONTEXT),
    }
    if spec.node_selector:
        extras["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        extras["tolerations"] = [dict(t) for t in spec.tolerations]
    return extras


def ray_start_resources(spec: RayClusterSpec, res: Resources) -> dict[str, str]:
    """What ``ray start`` is told about a node's size (``--num-cpus`` etc., without dashes).

    Both backends size Ray from the same numbers: whole CPUs, GPUs, memory minus the
    object store, and the object store (which lives in the /dev/shm volume).
    """
    store = object_store_bytes(spec, res)
    return {
        "num-cpus": str(res.ray_num_cpus),
        "num-gpus": str(res.gpu),
        "memory": str(res.memory_bytes - store),
        "object-store-memory": str(store),
    }


def node_port_params() -> dict[str, str]:
    """Every port ``ray start`` lets us pin on a node (head, worker or the notebook's),
    as options without dashes. Only the head adds GCS, Ray Client and dashboard ports."""
    return {
        "node-manager-port": str(NODE_MANAGER_PORT),
        "object-manager-port": str(OBJECT_MANAGER_PORT),
        "dashboard-agent-listen-port": str(DASHBOARD_AGENT_PORT),
        "dashboard-agent-grpc-port": str(DASHBOARD_AGENT_GRPC_PORT),
        "runtime-env-agent-port": str(RUNTIME_ENV_AGENT_PORT),
        "metrics-export-port": str(METRICS_PORT),
        "min-worker-port": str(MIN_WORKER_PORT),
        "max-worker-port": str(MAX_WORKER_PORT),
    }


def wait_for_gcs(spec: RayClusterSpec) -> str:
    """Shell lines that wait until the head's GCS accepts connections (``ray start
    --address`` gives up at once when the head is not up yet)."""
    return (
        f"until python -c 'import socket; socket.create_connection((\"{spec.head_host}\", {RAY_PORTS['gcs']}), 2)' "
        "2>/dev/null; do\n"
        "  echo 'rayspawner: waiting for the Ray head (GCS)'; sleep 1\n"
        "done\n"
    )


def ray_container(spec: RayClusterSpec, name: str, res: Resources) -> Manifest:
    """A Ray container without command or probes: image, env, resources, security, mounts."""
    c: Manifest = {
        "name": name,
        "image": spec.image,
        "env": ray_node_env(spec),
        "resources": resources(spec, res),
        "securityContext": dict(CONTAINER_SECURITY_CONTEXT),
        "volumeMounts": [dict(SHM_MOUNT), *(dict(m) for m in spec.volume_mounts)],
    }
    if spec.image_pull_policy:
        c["imagePullPolicy"] = spec.image_pull_policy
    return c


def ray_pod_spec(spec: RayClusterSpec, container: Manifest, res: Resources, *, version_probe: bool) -> Manifest:
    """A Ray pod's spec around ``container``: hardening, scheduling, shm and extra volumes,
    and (``version_probe``) the version-reporting init container."""
    pod: Manifest = {
        **pod_spec_extras(spec),
        "containers": [container],
        "volumes": [shm_volume(spec, res), *(dict(v) for v in spec.volumes)],
        # Ray drains for up to 30 s on SIGTERM; a cluster being torn down has nothing to drain for
        "terminationGracePeriodSeconds": 5,
    }
    if version_probe and wants_version_check(spec):
        pod["initContainers"] = [version_init_container(spec.image, spec.image_pull_policy)]
    return pod


def token_secret(spec: RayClusterSpec, token: str, owner: Owner | None = None) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(spec, spec.secret_name, owner),
        "type": "Opaque",
        "data": {naming.TOKEN_KEY: base64.b64encode(token.encode()).decode()},
    }


# A tiny, dependency-free HTTP probe (images need not have curl or wget).
HTTP_PROBE = (
    "import os,sys,urllib.request as u\n"
    "for url in sys.argv[1:]:\n"
    "    r = u.Request(url)\n"
    "    t = os.environ.get('RAY_AUTH_TOKEN')\n"
    "    if t: r.add_header('Authorization', 'Bearer ' + t)\n"
    "    u.urlopen(r, timeout=5).read()\n"
)


def http_probe(urls: list[str], *, period: int, failures: int, delay: int = 5) -> Manifest:
    return {
        "exec": {"command": ["python", "-c", HTTP_PROBE, *urls]},
        "initialDelaySeconds": delay,
        "periodSeconds": period,
        "timeoutSeconds": 10,
        "failureThreshold": failures,
    }


RAYLET_HEALTH = f"http://127.0.0.1:{DASHBOARD_AGENT_PORT}/api/local_raylet_healthz"
GCS_HEALTH = f"http://127.0.0.1:{RAY_PORTS['dashboard']}/api/gcs_healthz"

# Reports the image's Ray and Python versions as the container's termination
# message, which the hub reads from the pod status (no extra RBAC, no network).
VERSION_PROBE = (
    "import json,sys\n"
    "v={'python': '%d.%d' % sys.version_info[:2]}\n"
    "try:\n    import ray; v['ray'] = ray.__version__\n"
    "except Exception:\n    v['ray'] = None\n"
    "open('/dev/termination-log','w').write(json.dumps(v))\n"
)
VERSION_CONTAINER = "ray-version"


def version_init_container(image: str, pull_policy: str | None) -> Manifest:
    c: Manifest = {
        "name": VERSION_CONTAINER,
        "image": image,
        "command": ["python", "-c", VERSION_PROBE],
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}},
        "securityContext": dict(CONTAINER_SECURITY_CONTEXT),
        "terminationMessagePolicy": "File",
    }
    if pull_policy:
        c["imagePullPolicy"] = pull_policy
    return c


def wants_version_check(spec: RayClusterSpec) -> bool:
    return spec.version_check != "off" and spec.image != spec.notebook_image


#: DNS as NetworkPolicy sees it (after the Service's DNAT): 53 on CoreDNS/kube-dns, 5353 on
#: OpenShift's dns-default pods (its Service maps 53 to targetPort 5353).
DNS_PORTS = (53, 5353)


def tcp_ports(*ports: int) -> list[Manifest]:
    return [{"protocol": "TCP", "port": p} for p in ports]


#: the Ray worker processes' port range (every core worker, the driver's included)
WORKER_PORT_RANGE: Manifest = {"protocol": "TCP", "port": MIN_WORKER_PORT, "endPort": MAX_WORKER_PORT}


def notebook_to_cluster_ports(spec: RayClusterSpec) -> list[Manifest]:
    """Ports of the Ray pods the notebook connects to. Ray Client needs GCS, client and
    dashboard; a direct driver (and the notebook's own node) also the raylets' node and
    object managers and the worker processes."""
    ports = tcp_ports(RAY_PORTS["gcs"], RAY_PORTS["client"], RAY_PORTS["dashboard"])
    if spec.driver_mode:
        ports += [*tcp_ports(NODE_MANAGER_PORT, OBJECT_MANAGER_PORT), dict(WORKER_PORT_RANGE)]
    return ports


def cluster_to_notebook_ports() -> list[Manifest]:
    """Ports of the notebook's own Ray node (driver mode) the cluster's pods connect to:
    its raylet's node and object managers, its dashboard agent (the head's dashboard asks
    every node's agent) and the driver's and the node's worker processes."""
    return [
        *tcp_ports(NODE_MANAGER_PORT, OBJECT_MANAGER_PORT, DASHBOARD_AGENT_PORT, DASHBOARD_AGENT_GRPC_PORT),
        dict(WORKER_PORT_RANGE),
    ]


def network_policy(spec: RayClusterSpec, owner: Owner | None) -> Manifest:
    """The Ray pods' policy: ingress only from the same cluster and from its notebook (on
    :func:`notebook_to_cluster_ports`); egress only to the same cluster, to the notebook's
    own node in driver mode (:func:`cluster_to_notebook_ports`) and DNS (plus admin extras).

    DNS egress goes only to ``spec.dns_peers`` (``ray_network_policy_dns_peers``: by default
    kube-dns/CoreDNS in kube-system and OpenShift's DNS pods), never to any address on the DNS
    ports, which would let a job carry data out in DNS queries to a server of its choice.
    """

    def same_cluster() -> Manifest:  # fresh dicts per use: YAML output without anchors
        return {"podSelector": {"matchLabels": {naming.LABEL_CLUSTER: spec.name}}}

    def notebook() -> Manifest:
        return {"podSelector": {"matchLabels": dict(spec.notebook_selector)}}

    ingress: list[Manifest] = [{"from": [same_cluster()]}]
    if spec.notebook_selector:
        ingress.append({"from": [notebook()], "ports": notebook_to_cluster_ports(spec)})
    ingress.extend(dict(r) for r in spec.extra_ingress)
    egress: list[Manifest] = [
        {"to": [same_cluster()]},
        {
            "to": copy.deepcopy(list(spec.dns_peers)),
            "ports": [{"protocol": proto, "port": port} for port in DNS_PORTS for proto in ("UDP", "TCP")],
        },
    ]
    if spec.notebook_selector and spec.driver_mode:
        egress.append({"to": [notebook()], "ports": cluster_to_notebook_ports()})
    egress.extend(dict(r) for r in spec.extra_egress)
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(spec, spec.network_policy_name, owner),
        "spec": {
            "podSelector": {
                "matchLabels": {naming.LABEL_CLUSTER: spec.name, naming.LABEL_MANAGED_BY: naming.MANAGED_BY}
            },
            "policyTypes": ["Ingress", "Egress"],
            "ingress": ingress,
            "egress": egress,
        },
    }


def redact(manifest: Manifest) -> Manifest:
    """A copy safe to print: Secret values replaced."""
    if manifest.get("kind") != "Secret":
        return manifest
    out = dict(manifest)
    out["data"] = {k: "<redacted>" for k in manifest.get("data", {})}
    out.pop("stringData", None)
    return out
