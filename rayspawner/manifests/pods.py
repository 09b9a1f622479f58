"""The plain-pods backend's manifests: a head Pod, its Service, a worker
Deployment per group, the token Secret and the NetworkPolicy.

No operator is needed: the head is a Pod (``restartPolicy: Always``; poll
recreates it if it is deleted), workers are a Deployment (replaced if one dies).
"""

from __future__ import annotations

import shlex

from .. import naming
from ..spec import CLIENT_PORT, DASHBOARD_PORT, GCS_PORT, RAY_PORTS, RayClusterSpec, Resources, WorkerGroup
from . import common, notebook
from .common import READY_FILE, Manifest, Owner


# Run once on the head after it starts; only then is the head marked ready. It waits for
# the GCS and the dashboard (and, for Ray Client, that port). In client mode it then makes
# a first Ray Client connection (with retries), because the first connect to a fresh head
# is flaky, so that the user's own ray.init() is never the first. Driver mode needs no such
# round trip: a driver talks to the GCS directly.
HEAD_UP = (
    "import socket, sys, time, urllib.request as u\n"
    "deadline = time.time() + 600\n"
    "def up():\n"
    "    try:\n"
    "        socket.create_connection(('127.0.0.1', %(port)d), 1).close()\n"
    "        u.urlopen('http://127.0.0.1:%(dashboard)d/api/gcs_healthz', timeout=2).read()\n"
    "        return True\n"
    "    except Exception:\n"
    "        return False\n"
    "while not up():\n"
    "    if time.time() > deadline: sys.exit('rayspawner: the Ray head did not come up')\n"
    "    time.sleep(0.5)\n"
)
CLIENT_WARMUP = (
    "import ray\n"
    "while True:\n"
    "    try:\n"
    "        ray.init('ray://127.0.0.1:%(port)d', logging_level='ERROR')\n"
    "        ray.get(ray.remote(lambda: 1).options(num_cpus=0).remote())\n"
    "        ray.shutdown()\n"
    "        break\n"
    "    except Exception as e:\n"
    "        ray.shutdown()\n"
    "        if time.time() > deadline: raise\n"
    "        print('rayspawner: client warm-up retry:', type(e).__name__, flush=True)\n"
    "        time.sleep(1)\n"
)


def head_warmup(spec: RayClusterSpec) -> str:
    """The script that decides when the head is ready (see :data:`HEAD_UP`)."""
    if spec.driver_mode:
        return HEAD_UP % {"port": GCS_PORT, "dashboard": DASHBOARD_PORT}
    return (HEAD_UP + CLIENT_WARMUP) % {"port": CLIENT_PORT, "dashboard": DASHBOARD_PORT}


def _ray_resources_args(spec: RayClusterSpec, res: Resources) -> list[str]:
    params = {**common.ray_start_resources(spec, res), **common.node_port_params()}
    return [*(f"--{k}={v}" for k, v in params.items()), "--disable-usage-stats"]


def head_command(spec: RayClusterSpec) -> list[str]:
    start = [
        "ray",
        "start",
        "--head",
        "--block",
        f"--port={GCS_PORT}",
        f"--ray-client-server-port={CLIENT_PORT}",
        "--dashboard-host=0.0.0.0",
        f"--dashboard-port={DASHBOARD_PORT}",
        *_ray_resources_args(spec, spec.head),
    ]
    script = (
        f"{shlex.join(start)} &\n"
        "pid=$!\n"
        "trap 'kill -TERM $pid 2>/dev/null; wait $pid; exit 0' TERM INT\n"
        f'python -c "$1" && touch {READY_FILE}\n'
        "wait $pid\n"
    )
    return ["/bin/sh", "-c", script, "ray-head", head_warmup(spec)]


def worker_command(spec: RayClusterSpec, group: WorkerGroup) -> list[str]:
    start = [
        "ray",
        "start",
        f"--address={spec.head_host}:{GCS_PORT}",
        "--block",
        *_ray_resources_args(spec, group.resources),
    ]
    return ["/bin/sh", "-c", common.wait_for_gcs(spec) + "exec " + shlex.join(start)]


def _container(spec: RayClusterSpec, name: str, command: list[str], res: Resources) -> Manifest:
    return {**common.ray_container(spec, name, res), "command": command}


def _pod_spec(spec: RayClusterSpec, container: Manifest, res: Resources, *, version_probe: bool) -> Manifest:
    return {**common.ray_pod_spec(spec, container, res, version_probe=version_probe), "restartPolicy": "Always"}


def head_pod(spec: RayClusterSpec, owner: Owner | None) -> Manifest:
    container = _container(spec, "ray-head", head_command(spec), spec.head)
    container["ports"] = [{"name": n, "containerPort": p, "protocol": "TCP"} for n, p in RAY_PORTS.items()]
    ready_check = f'test -f {READY_FILE} && python -c "$1" {common.GCS_HEALTH}'
    container["readinessProbe"] = {
        "exec": {"command": ["/bin/sh", "-c", ready_check, "probe", common.HTTP_PROBE]},
        "initialDelaySeconds": 2,
        "periodSeconds": 2,
        "timeoutSeconds": 10,
        "failureThreshold": 3,
    }
    container["livenessProbe"] = common.http_probe([common.GCS_HEALTH], period=10, failures=6, delay=30)
    meta = common.metadata(spec, spec.head_pod, owner, naming.COMPONENT_HEAD)
    meta.update(common.template_metadata(spec, meta["labels"]))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {**_pod_spec(spec, container, spec.head, version_probe=True), "hostname": spec.head_pod},
    }


def head_service(spec: RayClusterSpec, owner: Owner | None) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": common.metadata(spec, spec.head_service, owner, naming.COMPONENT_HEAD),
        "spec": {
            "type": "ClusterIP",
            "selector": {naming.LABEL_CLUSTER: spec.name, naming.LABEL_COMPONENT: naming.COMPONENT_HEAD},
            "ports": [{"name": n, "port": p, "targetPort": p, "protocol": "TCP"} for n, p in RAY_PORTS.items()],
        },
    }


def worker_deployment(spec: RayClusterSpec, group: WorkerGroup, owner: Owner | None) -> Manifest:
    name = naming.worker_deployment(spec.name, group.name)
    container = _container(spec, "ray-worker", worker_command(spec, group), group.resources)
    container["livenessProbe"] = common.http_probe([common.RAYLET_HEALTH], period=10, failures=6, delay=60)
    meta = common.metadata(spec, name, owner, naming.COMPONENT_WORKER)
    selector = {
        naming.LABEL_CLUSTER: spec.name,
        naming.LABEL_COMPONENT: naming.COMPONENT_WORKER,
        naming.LABEL_GROUP: group.name,
    }
    pod_labels = {**meta["labels"], naming.LABEL_GROUP: group.name}
    meta["labels"] = pod_labels
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": group.replicas,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": common.template_metadata(spec, pod_labels),
                "spec": _pod_spec(spec, container, group.resources, version_probe=False),
            },
        },
    }


def cluster_objects(spec: RayClusterSpec, owner: Owner | None) -> list[Manifest]:
    """Every object of the cluster except the Secret, in creation order."""
    objs: list[Manifest] = []
    if spec.network_policy:
        objs.append(common.network_policy(spec, owner))
    objs.extend(p for p in [notebook.network_policy(spec, owner)] if p)
    objs.append(head_service(spec, owner))
    objs.append(head_pod(spec, owner))
    objs.extend(worker_deployment(spec, g, owner) for g in spec.worker_groups)
    return objs
