"""RaySpawner with the KubeRay backend against the real test cluster and the real KubeRay
operator (v1.6.2) on the sim node. The two tests that need a cluster without KubeRay still use
the loopback emulator."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubespawner.clients import load_config

from rayspawner import naming
from rayspawner.backends.kuberay import KubeRayBackend
from rayspawner.errors import ClusterStartError

from testcluster.node.kubelet_sim import IMAGE_PULL, SIM_DELAYS

from .spawner_fixtures import ray_objects
from .spawner_fixtures import RAY, env_of, start, wait_until

pytestmark = pytest.mark.asyncio

RBAC_DIR = Path(__file__).resolve().parents[1] / "jupyterhub_config" / "rbac"
WRITES = ("create", "update", "patch", "delete", "deletecollection")
# z2jh's own hub Role (rbac.create: true), which rayspawner's Roles add to
Z2JH_HUB_ROLE = """
kind: Role
apiVersion: rbac.authorization.k8s.io/v1
metadata: {name: hub}
rules:
  - apiGroups: [""]
    resources: [pods, persistentvolumeclaims, secrets, services]
    verbs: [get, watch, list, create, delete]
  - apiGroups: [""]
    resources: [events]
    verbs: [get, watch, list]
---
kind: RoleBinding
apiVersion: rbac.authorization.k8s.io/v1
metadata: {name: hub}
subjects: [{kind: ServiceAccount, name: hub, namespace: jhub}]
roleRef: {kind: Role, name: hub, apiGroup: rbac.authorization.k8s.io}
"""


def leftovers(kube, cluster: str = "") -> list[tuple[str, str]]:
    """Everything of a Ray cluster: ours (managed-by) and what KubeRay made (ray.io/cluster)."""
    found = set(ray_objects(kube, cluster or None))
    selector = f"ray.io/cluster={cluster}" if cluster else "ray.io/cluster"
    for resource in ("pods", "services", "secrets", "networkpolicies"):
        for obj in kube.list_objects(resource, kube.ns, label_selector=selector):
            found.add((resource, obj["metadata"]["name"]))
    if kube.kuberay:
        for obj in kube.list_objects("rayclusters", kube.ns):
            found.add(("rayclusters", obj["metadata"]["name"]))
    return sorted(found)


def writes(kube) -> list[tuple]:
    return [r for r in kube.request_log if r[0] in WRITES]


@pytest.fixture
def rbac_kube_factory(kube_factory):
    """A namespace where the hub's ServiceAccount holds z2jh's hub Role plus ``role_files``."""

    def make(*role_files: Path):
        docs = [d for d in yaml.safe_load_all(Z2JH_HUB_ROLE) if d]
        for f in role_files:
            docs += [d for d in yaml.safe_load_all(f.read_text()) if d]
        load_config.cache_clear()  # kubespawner caches the loaded kubeconfig per host
        kube = kube_factory(rbac=docs)
        return kube, kube

    yield make
    load_config.cache_clear()


# ------------------------------------------------------------------ the happy path
@pytest.mark.parametrize("autoscaling", [False, True], ids=["fixed", "autoscaling"])
async def test_autodetected_kuberay_spawn_ready_env_stop(kube, ray_spawner_factory, autoscaling):
    traits = {"ray_worker_min_replicas": 0, "ray_worker_max_replicas": 3} if autoscaling else {}
    sp = ray_spawner_factory(kube, ray_backend="auto", **traits)
    kube.reset_request_log()
    await start(sp)
    assert isinstance(sp.ray_session.backend, KubeRayBackend)
    notebook = kube.get_object("pods", kube.ns, sp.pod_name)

    # one RayCluster, owned by the notebook pod, labelled like the pods backend's objects
    rc = kube.get_object("rayclusters", kube.ns, "ray-alice")
    assert rc["metadata"]["ownerReferences"][0]["uid"] == notebook["metadata"]["uid"]
    assert rc["metadata"]["labels"][naming.LABEL_MANAGED_BY] == "rayspawner"
    assert rc["metadata"]["labels"][naming.LABEL_USERNAME] == "alice"
    assert rc["spec"].get("enableInTreeAutoscaling", False) is autoscaling
    assert rc["spec"]["authOptions"] == {"mode": "token", "secretName": "ray-alice-ray-token"}
    secret = kube.get_object("secrets", kube.ns, "ray-alice-ray-token")
    assert secret["metadata"]["ownerReferences"][0]["uid"] == notebook["metadata"]["uid"]
    assert kube.get_object("networkpolicies", kube.ns, "ray-alice-ray") is not None

    # ready according to the RayCluster's status; the head pod (made by KubeRay) is in our reflector
    status = rc["status"]
    assert {c["type"]: c["status"] for c in status["conditions"]}["HeadPodReady"] == "True"
    heads = [p for p in sp._ray_pods().values() if p["metadata"]["labels"].get("ray.io/node-type") == "head"]
    assert len(heads) == 1 and heads[0]["metadata"]["labels"][naming.LABEL_COMPONENT] == "ray-head"
    st = await sp.ray_session.backend.status(sp.ray_session.spec)
    assert st.head_ready and st.exists and st.phase == "ready"
    assert status["head"]["serviceName"] == f"{sp.ray_session.spec.name}-head-svc"

    # the notebook's env points at the head service the operator reports
    env = env_of(notebook)
    # driver mode (the default): the head Service's GCS, reached through the notebook's own Ray node
    assert env["RAY_ADDRESS"]["value"] == f"{status['head']['serviceName']}.{kube.ns}.svc.cluster.local:6379"
    assert (
        env["RAY_DASHBOARD_URL"]["value"] == f"http://{status['head']['serviceName']}.{kube.ns}.svc.cluster.local:8265"
    )
    assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "ray-alice-ray-token", "key": "auth_token"}
    assert "value" not in env["RAY_AUTH_TOKEN"]
    state = sp.get_state()
    assert state["ray_cluster"] == {"name": "ray-alice", "namespace": kube.ns, "backend": "kuberay"}
    assert secret["data"]["auth_token"] not in json.dumps(state)
    await wait_until(lambda: sum(1 for k, n in leftovers(kube, "ray-alice") if k == "pods") == 3)
    assert await sp.poll() is None

    await asyncio.wait_for(sp.stop(), 20)
    assert leftovers(kube) == []
    assert kube.get_object("pods", kube.ns, sp.pod_name) is None
    requests = kube.request_log
    cluster_requests = [r for r in requests if r[1] in ("rayclusters", "secrets", "networkpolicies") and r[0] in WRITES]
    # Secret create+patch+delete, NP and RC create+delete; autoscaling: the head's API server NP too
    assert len(cluster_requests) <= (9 if autoscaling else 7), cluster_requests
    print("requests of a cold spawn+stop:", len(requests), requests)


async def test_warm_spawn_and_stop_cost_at_most_15_requests(kube, ray_spawner_factory):
    """Once the shared reflectors run (any earlier spawn), a spawn+stop is a handful of requests."""
    warmup = ray_spawner_factory(kube, "warmup", ray_backend="auto")
    await start(warmup)
    await warmup.stop()
    sp = ray_spawner_factory(kube, "alice", ray_backend="auto")
    kube.reset_request_log()
    await start(sp)
    await asyncio.wait_for(sp.stop(), 20)
    requests = kube.request_log
    print("requests of a warm spawn+stop:", len(requests), requests)
    periodic = [r for r in requests if r[0] in ("list", "watch") and r[3] is None]  # reflector (re)starts
    assert len(requests) - len(periodic) <= 15, requests
    assert leftovers(kube) == []


async def test_open_watches_do_not_grow_with_users(kube, ray_spawner_factory):
    first = ray_spawner_factory(kube, "alice", ray_backend="auto")
    await start(first)
    watches_one = kube.open_watches.current
    others = [ray_spawner_factory(kube, name, ray_backend="auto") for name in ("bob", "carol", "dave")]
    await asyncio.gather(*(start(sp) for sp in others))
    assert kube.open_watches.current <= watches_one
    assert {n for k, n in leftovers(kube) if k == "rayclusters"} == {"ray-alice", "ray-bob", "ray-carol", "ray-dave"}
    await asyncio.gather(*(sp.stop() for sp in [first, *others]))
    assert leftovers(kube) == []


async def test_autodetects_pods_backend_without_kuberay(kube, ray_spawner_factory):
    kube.proxy.hidden_groups.add("ray.io")  # to the hub, an API server without KubeRay's CRDs
    sp = ray_spawner_factory(kube, ray_backend="auto")
    await start(sp)
    assert sp.get_state()["ray_cluster"]["backend"] == "pods"
    assert not any(r[1] == "rayclusters" for r in kube.request_log)
    assert ("discovery", "/apis/ray.io/v1") in kube.proxy.discovery_log
    await asyncio.wait_for(sp.stop(), 20)
    assert leftovers(kube) == []


# ------------------------------------------------------------------ failures
async def test_forced_kuberay_without_crd_fails_clearly_and_creates_nothing(kube, ray_spawner_factory):
    kube.proxy.hidden_groups.add("ray.io")
    sp = ray_spawner_factory(kube, ray_backend="kuberay")
    kube.reset_request_log()
    with pytest.raises(ClusterStartError) as err:
        await start(sp)
    message = err.value.message
    assert "KubeRay is not installed" in message and "ray_backend" in message and "helm install" in message
    assert writes(kube) == []
    assert kube.list_objects("pods", kube.ns) == [] and leftovers(kube) == []
    await sp.stop()


async def test_rbac_without_rayclusters_names_the_missing_rule(rbac_kube_factory, ray_spawner_factory):
    kube, as_hub = rbac_kube_factory(RBAC_DIR / "role-pods.yaml")  # role-kuberay.yaml not applied
    sp = ray_spawner_factory(as_hub, ray_backend="kuberay")
    with pytest.raises(ClusterStartError) as err:
        await start(sp)
    message = err.value.message
    assert "rayclusters" in message and '"ray.io"' in message and "verbs" in message and "Role" in message
    assert '"list", "watch"' in message
    assert writes(kube) == []  # refused before anything was created
    await sp.stop()  # what JupyterHub does after a failed start (KubeSpawner deletes the absent pod: 404)
    assert [r for r in writes(kube) if r[0] != "delete"] == []
    assert kube.list_objects("pods", kube.ns) == [] and leftovers(kube) == []


async def test_shipped_rbac_is_enough_for_a_kuberay_spawn(rbac_kube_factory, ray_spawner_factory):
    kube, as_hub = rbac_kube_factory(RBAC_DIR / "role-pods.yaml", RBAC_DIR / "role-kuberay.yaml")
    sp = ray_spawner_factory(as_hub, ray_backend="kuberay")
    try:
        await start(sp)
        assert kube.get_object("rayclusters", kube.ns, "ray-alice") is not None
    finally:
        await sp.stop()
    assert leftovers(kube) == []


async def test_forbidden_create_rayclusters_names_rule_and_leaves_nothing(kube, ray_spawner_factory):
    kube.faults.add("create", "rayclusters", status=403, count=None)
    sp = ray_spawner_factory(kube, ray_backend="kuberay")
    try:
        with pytest.raises(ClusterStartError) as err:
            await start(sp)
    finally:
        kube.faults.clear()
    message = err.value.message
    assert 'apiGroups: ["ray.io"], resources: ["rayclusters"], verbs: ["create"]' in message
    await asyncio.wait_for(sp.stop(), 20)  # what JupyterHub does after a failed start
    assert leftovers(kube) == []
    assert kube.list_objects("pods", kube.ns) == []


async def test_head_that_cannot_pull_fails_spawn_readably(kube, ray_spawner_factory):
    sp = ray_spawner_factory(kube, ray_backend="kuberay", ray_extra_annotations={IMAGE_PULL: "fail"})
    with pytest.raises(ClusterStartError) as err:
        await start(sp)
    assert "cannot be pulled" in err.value.message and "ray-alice" in err.value.message
    await asyncio.wait_for(sp.stop(), 20)
    assert leftovers(kube) == []


async def test_raycluster_deleted_behind_our_back_fails_poll(kube, ray_spawner_factory):
    sp = ray_spawner_factory(kube, ray_backend="kuberay")
    await start(sp)
    kube.delete_object("rayclusters", kube.ns, "ray-alice")
    await wait_until(lambda: f"{kube.ns}/ray-alice" not in sp.ray_session.backend.ray_clusters())
    assert await sp.poll() == 1
    await asyncio.wait_for(sp.stop(), 20)
    assert leftovers(kube) == []


async def test_restarted_hub_reattaches_and_stops(kube, ray_spawner_factory):
    first = ray_spawner_factory(kube, ray_backend="kuberay")
    await start(first)
    second = ray_spawner_factory(kube, ray_backend="kuberay")  # a new hub process's spawner object
    second.load_state(first.get_state())
    assert await second.poll() is None
    await asyncio.wait_for(second.stop(), 20)
    assert leftovers(kube) == []


async def test_progress_follows_the_raycluster(kube, ray_spawner_factory):
    slow = {SIM_DELAYS: "pull=0.4,start=0.2"}
    sp = ray_spawner_factory(kube, ray_backend="kuberay", extra_annotations=slow, ray_extra_annotations=slow)
    sp.user_options = dict(RAY)
    fut = asyncio.ensure_future(sp.start())
    messages: list[Any] = [e["message"] async for e in sp.progress()]
    await asyncio.wait_for(fut, 30)
    ray_msgs = [m for m in messages if m.startswith("Ray cluster ray-alice")]
    assert ray_msgs and "is ready" in ray_msgs[-1], messages
    await sp.stop()
    assert leftovers(kube) == []
