"""The KubeRay backend's manifests: one ``ray.io/v1`` RayCluster (plus the
NetworkPolicy; the token Secret comes from :func:`common.token_secret`).

Pure functions of the :class:`~rayspawner.spec.RayClusterSpec`. The pod templates
share everything with the plain-pods backend (image, resources, security context,
/dev/shm, env, scheduling, volumes — see :mod:`rayspawner.manifests.common`); what
differs is that KubeRay writes the ``ray start`` command from ``rayStartParams``.

Things KubeRay does with what we give it (checked against KubeRay v1.7.0):

- the head Service is named from ``headGroupSpec.headService.metadata.name`` (we pin
  ``<name>-head-svc``, so the notebook's RAY_ADDRESS is known before the cluster has
  a status) and gets the head container's ports, which therefore carry KubeRay's
  port names (``gcs-server``, ``client``, ``dashboard``, ``metrics``);
- container env it finds already set (RAY_AUTH_MODE, RAY_AUTH_TOKEN) is not added
  again, so with ``authOptions`` the nodes, the injected ``wait-gcs-ready`` init
  container and the autoscaler all read the token from the Secret the spawner made;
- a /dev/shm mount already present is kept (ours is sized to the object store);
- probes already present are kept (KubeRay's default probes need wget or a recent Ray;
  ours need only Python).

Autoscaling (``spec.autoscaling``): KubeRay adds an ``autoscaler`` sidecar to the
head and creates, per cluster, a ServiceAccount, a Role (pods: get/list/watch/patch,
pods/resize: patch, rayclusters: get/patch) and a RoleBinding for it; the hub
needs no extra RBAC for that (the operator's own ClusterRole covers it). That
Role is namespace-wide, so its token must not be readable by user code in the
Ray container (it could patch other users' RayClusters). Therefore
``automountServiceAccountToken`` stays false on every Ray pod, and the head gets
a projected service-account token volume (exactly what the kubelet's automount
would provide) mounted **only** into the autoscaler sidecar. A NetworkPolicy of its
own, ``<cluster>-apiserver``, selects only the head pod and lets it reach the API
server on TCP 443/6443: at the ``ray_autoscaler_api_server_cidrs`` when the admin
names them, else at any address (the API server is no pod a selector could name).
Workers get no such egress.
"""

from __future__ import annotations

from typing import Any

from .. import naming
from ..spec import CLIENT_PORT, DASHBOARD_PORT, GCS_PORT, METRICS_PORT, RayClusterSpec, WorkerGroup
from . import common, notebook
from .common import READY_FILE, Manifest, Owner

API_VERSION = "ray.io/v1"
KIND = "RayCluster"

#: KubeRay's names for the head container's ports (they become the head Service's port names)
HEAD_PORTS = (
    ("gcs-server", GCS_PORT),
    ("client", CLIENT_PORT),
    ("dashboard", DASHBOARD_PORT),
    ("metrics", METRICS_PORT),
)

#: resources of KubeRay's autoscaler sidecar (its defaults, made explicit: limits always set)
AUTOSCALER_RESOURCES: Manifest = {
    "requests": {"cpu": "500m", "memory": "512Mi"},
    "limits": {"cpu": "500m", "memory": "512Mi"},
}
AUTOSCALER_TOKEN_VOLUME = "autoscaler-sa-token"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
#: the API server's usual ports, for the autoscaler's egress
API_SERVER_PORTS = (443, 6443)


# One Ray Client round trip against the local head: the first connect to a fresh
# head is flaky, so the head is only "ready" (HeadPodReady) once one has worked.
CLIENT_WARMUP_ONCE = (
    "import ray\n"
    "try:\n"
    "    ray.init('ray://127.0.0.1:%d', logging_level='ERROR')\n"
    "    ray.get(ray.remote(lambda: 1).options(num_cpus=0).remote(), timeout=20)\n"
    "finally:\n"
    "    ray.shutdown()\n"
) % CLIENT_PORT


def _head_readiness_probe(spec: RayClusterSpec) -> Manifest:
    """Ready = GCS is healthy and, in client mode, a Ray Client round trip succeeded once
    (remembered in a file). Drivers talk to the GCS directly: no round trip for them."""
    script = f'python -c "$2" {common.GCS_HEALTH}'
    if not spec.driver_mode:
        script = f'if [ ! -f {READY_FILE} ]; then python -c "$1" && touch {READY_FILE} || exit 1; fi; ' + script
    return {
        "exec": {"command": ["/bin/sh", "-c", script, "probe", CLIENT_WARMUP_ONCE, common.HTTP_PROBE]},
        "initialDelaySeconds": 3,
        "periodSeconds": 3,
        "timeoutSeconds": 40,
        "failureThreshold": 3,
    }


def _start_params(spec: RayClusterSpec, group: WorkerGroup | None) -> dict[str, str]:
    """``rayStartParams`` (all strings, as the CRD requires)."""
    res = group.resources if group else spec.head
    params = {**common.ray_start_resources(spec, res), **common.node_port_params()}
    params["disable-usage-stats"] = "true"  # KubeRay turns "true" into a bare flag
    if group is None:
        params.update(
            {
                "dashboard-host": "0.0.0.0",
                "port": str(GCS_PORT),
                "ray-client-server-port": str(CLIENT_PORT),
                "dashboard-port": str(DASHBOARD_PORT),
            }
        )
    return params


def _template(spec: RayClusterSpec, container: Manifest, group: WorkerGroup | None) -> Manifest:
    res = group.resources if group else spec.head
    labels = spec.labels
    labels[naming.LABEL_COMPONENT] = naming.COMPONENT_WORKER if group else naming.COMPONENT_HEAD
    if group:
        labels[naming.LABEL_GROUP] = group.name
    pod = common.ray_pod_spec(spec, container, res, version_probe=group is None)
    return {"metadata": common.template_metadata(spec, labels), "spec": pod}


def head_group(spec: RayClusterSpec) -> Manifest:
    container = common.ray_container(spec, "ray-head", spec.head)
    container["ports"] = [{"name": n, "containerPort": p, "protocol": "TCP"} for n, p in HEAD_PORTS]
    container["readinessProbe"] = _head_readiness_probe(spec)
    container["livenessProbe"] = common.http_probe([common.GCS_HEALTH], period=10, failures=6, delay=30)
    template = _template(spec, container, None)
    if spec.autoscaling:
        template["spec"]["volumes"].append(autoscaler_token_volume())
    service_labels = spec.labels
    service_labels[naming.LABEL_COMPONENT] = naming.COMPONENT_HEAD
    return {
        "serviceType": "ClusterIP",
        "headService": {"metadata": {"name": spec.head_service, "labels": service_labels}},
        "rayStartParams": _start_params(spec, None),
        "template": template,
    }


def worker_group(spec: RayClusterSpec, group: WorkerGroup) -> Manifest:
    container = common.ray_container(spec, "ray-worker", group.resources)
    container["readinessProbe"] = common.http_probe([common.RAYLET_HEALTH], period=5, failures=3, delay=5)
    container["livenessProbe"] = common.http_probe([common.RAYLET_HEALTH], period=10, failures=6, delay=60)
    return {
        "groupName": group.name,
        "replicas": group.replicas,
        "minReplicas": group.min_replicas,
        "maxReplicas": group.max_replicas,
        "rayStartParams": _start_params(spec, group),
        "template": _template(spec, container, group),
    }


def autoscaler_token_volume() -> Manifest:
    """The API credentials the kubelet would automount, as a volume we mount only where needed."""
    return {
        "name": AUTOSCALER_TOKEN_VOLUME,
        "projected": {
            "sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {
                    "downwardAPI": {
                        "items": [
                            {"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}
                        ]
                    }
                },
            ],
        },
    }


def autoscaler_options(spec: RayClusterSpec) -> Manifest:
    options: Manifest = {
        "idleTimeoutSeconds": spec.idle_timeout_seconds,
        "upscalingMode": spec.upscaling_mode,
        "resources": {k: dict(v) for k, v in AUTOSCALER_RESOURCES.items()},
        "securityContext": dict(common.CONTAINER_SECURITY_CONTEXT),
        "volumeMounts": [{"name": AUTOSCALER_TOKEN_VOLUME, "mountPath": SERVICE_ACCOUNT_DIR, "readOnly": True}],
    }
    if spec.image_pull_policy:
        options["imagePullPolicy"] = spec.image_pull_policy
    return options


def raycluster(spec: RayClusterSpec, owner: Owner | None) -> Manifest:
    """The RayCluster custom resource of one user-server."""
    body: dict[str, Any] = {
        "rayVersion": spec.ray_version,
        "headGroupSpec": head_group(spec),
        "workerGroupSpecs": [worker_group(spec, g) for g in spec.worker_groups],
    }
    if spec.autoscaling:
        body["enableInTreeAutoscaling"] = True
        body["autoscalerOptions"] = autoscaler_options(spec)
    if spec.auth_enabled:
        body["authOptions"] = {"mode": "token", "secretName": spec.secret_name}
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": common.metadata(spec, spec.name, owner), "spec": body}


def network_policy(spec: RayClusterSpec, owner: Owner | None) -> Manifest:
    """The Ray pods' policy, as for the pods backend (API server egress is not in it)."""
    return common.network_policy(spec, owner)


def api_server_policy(spec: RayClusterSpec, owner: Owner | None) -> Manifest:
    """Autoscaling: the head pod alone (its autoscaler sidecar) may reach the API server.

    Egress only (it isolates nothing new: the head's egress is already isolated by
    :func:`network_policy`); to ``spec.api_server_cidrs`` when set, else to any address,
    on the API server's ports only."""
    rule: Manifest = {"ports": [{"protocol": "TCP", "port": p} for p in API_SERVER_PORTS]}
    if spec.api_server_cidrs:
        rule["to"] = [{"ipBlock": {"cidr": c}} for c in spec.api_server_cidrs]
    head = {
        naming.LABEL_CLUSTER: spec.name,
        naming.LABEL_MANAGED_BY: naming.MANAGED_BY,
        naming.LABEL_COMPONENT: naming.COMPONENT_HEAD,
    }
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": common.metadata(spec, naming.api_server_network_policy(spec.name), owner),
        "spec": {"podSelector": {"matchLabels": head}, "policyTypes": ["Egress"], "egress": [rule]},
    }


def pod_templates(cluster: Manifest) -> list[tuple[str, Manifest]]:
    """(group name, pod template) of a RayCluster manifest: "head" and each worker group."""
    spec = cluster["spec"]
    out = [("head", spec["headGroupSpec"]["template"])]
    out.extend((g["groupName"], g["template"]) for g in spec.get("workerGroupSpecs") or [])
    return out


def cluster_objects(spec: RayClusterSpec, owner: Owner | None) -> list[Manifest]:
    """Every object of the cluster except the Secret, in creation order."""
    objs: list[Manifest] = []
    if spec.network_policy:
        objs.append(network_policy(spec, owner))
        if spec.autoscaling:
            objs.append(api_server_policy(spec, owner))
    objs.extend(p for p in [notebook.network_policy(spec, owner)] if p)
    objs.append(raycluster(spec, owner))
    return objs
