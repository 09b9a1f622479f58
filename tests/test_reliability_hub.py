"""The hub process killed (SIGKILL) at every step of a spawn, then restarted.

A real JupyterHub subprocess (tests/hubproc.py) runs RaySpawner against the real
test cluster, as its own namespace's hub account. Each step is held by a slow API
request (a latency fault of the test's fault proxy on exactly that request), the test
watches the proxy's request log until the hub is in it, and kills the hub. The
next hub process (same database) must leave nothing rayspawner-labelled behind, by
owner GC, JupyterHub's own start-up check of the server it knew was pending (the sim
notebook never answers HTTP, so a spawn that never finished is stopped) and the orphan
sweep (ownerless token Secret). Objects not labelled managed-by=rayspawner are never
touched.

Each restarted hub is the next step's hub, so N steps cost N+1 hub starts.
Running servers re-attaching after a restart are tested at spawner level
(get_state/load_state): test_running_server_reattaches_and_survives_the_sweep.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest

from testcluster.fixtures import hub_rbac_documents
from testcluster.node.kubelet_sim import SIM_DELAYS

from .hubproc import HubProcess
from .reliability_helpers import hub_start, hub_stop, leftovers, settle
from .spawner_fixtures import NOTEBOOK_IMAGE, PROFILES, RESTRICTED_TRAITS

pytestmark = pytest.mark.slow

RAY = {"profile": "ray", "workers": "1"}
#: (verb, resource, n-th such request of the spawn) held while the hub is killed; ("wait", ...) = head not ready yet
KILL_POINTS = {
    "pods": [
        ("create", "secrets", 1),
        ("create", "pods", 1),
        ("patch", "secrets", 1),
        ("create", "networkpolicies", 1),
        ("create", "services", 1),
        ("create", "pods", 2),
        ("create", "deployments", 1),
        ("wait", "ready", 0),
    ],
    "kuberay": [
        ("create", "secrets", 1),
        ("create", "pods", 1),
        ("patch", "secrets", 1),
        ("create", "networkpolicies", 1),
        ("create", "rayclusters", 1),
        ("wait", "ready", 0),
    ],
}
if not os.environ.get("RAYSPAWNER_ALL_KILL_POINTS"):  # CI: the steps where what exists differs most
    # ownerless Secret (sweep) / owned objects of a pending notebook (GC) / a cluster waiting for its head
    KILL_POINTS = {
        b: [
            p
            for p in points
            if p
            in {("create", "pods", 1), ("create", "deployments", 1), ("create", "rayclusters", 1), ("wait", "ready", 0)}
        ]
        for b, points in KILL_POINTS.items()
    }
#: ray_orphan_sweep_secrets = "by-name", with a Role without list/watch on secrets: the steps
#: around the token Secret (#1 is its dry run before the notebook pod, #2 the create after it)
KILL_POINTS_BY_NAME = {
    "pods": [
        ("create", "secrets", 1),
        ("create", "pods", 1),
        ("create", "networkpolicies", 1),
        ("create", "secrets", 2),
    ],
    "kuberay": [("create", "pods", 1), ("create", "networkpolicies", 1), ("create", "secrets", 2)],
}
UNRELATED = [
    {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "unrelated"}, "data": {}},
    {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "ray-bob-ray-token",
            "labels": {"app.kubernetes.io/managed-by": "helm", "ray.io/cluster": "ray-bob"},
        },
        "data": {},
    },
    {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "other-svc", "labels": {"app.kubernetes.io/managed-by": "helm"}},
        "spec": {"ports": [{"port": 80}]},
    },
]


HOLD = 2.0  # seconds the API server holds the request the hub is killed in


def ours(kube) -> list[tuple[str, str]]:
    """Everything rayspawner (or a Ray cluster, or a notebook) left, without the unrelated objects."""
    unrelated = {m["metadata"]["name"] for m in UNRELATED}
    return [(k, n) for k, n in leftovers(kube) if n not in unrelated]


def hub_config(kube, backend: str, secrets_mode: str = "list") -> str:
    # the namespace enforces the restricted Pod Security Standard; every image pull takes 1.5 s
    restricted = "\n".join(f"c.KubeSpawner.{k} = {v!r}" for k, v in RESTRICTED_TRAITS.items())
    pull = {SIM_DELAYS: "pull=1.5"}
    return f"""
c.JupyterHub.spawner_class = "ray"
c.JupyterHub.tornado_settings = {{"slow_spawn_timeout": 0}}
c.KubeSpawner.namespace = "{kube.ns}"
c.KubeSpawner.k8s_api_host = "{kube.url}"
{restricted}
c.KubeSpawner.extra_annotations = {pull!r}
c.RaySpawner.ray_extra_annotations = {pull!r}
c.KubeSpawner.image = "{NOTEBOOK_IMAGE}"
c.KubeSpawner.profile_list = {PROFILES!r}
c.KubeSpawner.start_timeout = 60
c.KubeSpawner.http_timeout = 3
# the sim notebook never serves HTTP; connect to a closed loopback port so nothing on this
# host's network (pod IPs are not routed here) can answer for it
c.KubeSpawner.port = 9
c.KubeSpawner.pod_connect_ip = "127.0.0.1"
c.KubeSpawner.delete_grace_period = 0
c.KubeSpawner.k8s_api_request_timeout = 3
c.KubeSpawner.k8s_api_request_retry_timeout = 10
c.RaySpawner.ray_backend = "{backend}"
c.RaySpawner.ray_stop_timeout = 5
c.RaySpawner.ray_orphan_grace_seconds = 1
c.RaySpawner.ray_orphan_sweep_interval = 2
c.RaySpawner.ray_orphan_sweep_secrets = "{secrets_mode}"
"""


def spawn_in_background(hub: HubProcess) -> threading.Thread:
    def post():
        try:
            hub.api("POST", "/users/alice/server", RAY, timeout=30)
        except Exception:  # noqa: BLE001 - the hub is killed under it
            pass

    t = threading.Thread(target=post, daemon=True)
    t.start()
    return t


def writes_in(kube) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in kube.request_log if r[2] == kube.ns and r[0] in ("create", "patch")]


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize(
    "backend,secrets_mode", [("pods", "list"), ("kuberay", "list"), ("pods", "by-name"), ("kuberay", "by-name")]
)
def test_hub_killed_at_every_step_of_a_spawn(kube_factory, tmp_path, backend, secrets_mode):
    by_name = secrets_mode == "by-name"
    rbac = None
    if by_name:  # the hub runs under the variant Role: a Secret list or watch would be refused
        rbac = hub_rbac_documents(
            ("role-pods-secrets-by-name.yaml", *(["role-kuberay.yaml"] if backend == "kuberay" else []))
        )
    kube = kube_factory(rbac=rbac)
    for manifest in UNRELATED:
        kube.create_object(manifest, kube.ns)
    unrelated_before = {
        (m["kind"], m["metadata"]["name"]): kube.get_object(m["kind"].lower() + "s", kube.ns, m["metadata"]["name"])[
            "metadata"
        ]["resourceVersion"]
        for m in UNRELATED
    }
    env = {"KUBECONFIG": str(kube.kubeconfig_path)}
    config = hub_config(kube, backend, secrets_mode)
    workdir = tmp_path / "hub"
    workdir.mkdir()
    hub = HubProcess(config, env, workdir=str(workdir)).start()
    hub.api("POST", "/users/alice")
    figures = {"kills": 0, "hub_starts": 1, "left_after_restart": {}}
    try:
        for verb, resource, nth in (KILL_POINTS_BY_NAME if by_name else KILL_POINTS)[backend]:
            step = f"{verb} {resource}#{nth}"
            kube.reset_request_log()
            if verb != "wait":
                kube.faults.add(verb, resource, latency=HOLD, namespace=kube.ns, count=None)
            spawn_in_background(hub)
            if verb == "wait":
                wait_for(
                    lambda: ("create", "deployments" if backend == "pods" else "rayclusters") in writes_in(kube),
                    30,
                    f"{step}: cluster created",
                )
                time.sleep(0.3)
            else:
                try:
                    wait_for(
                        lambda v=verb, r=resource, n=nth: writes_in(kube).count((v, r)) >= n,
                        30,
                        f"{step} requested",
                    )
                except AssertionError as e:
                    raise AssertionError(f"{e}; requests: {writes_in(kube)}\n{hub.log()[-3000:]}") from None
            hub.kill()
            figures["kills"] += 1
            if verb != "wait":
                kube.faults.clear()  # the API server is healthy again after the crash
                time.sleep(HOLD + 0.5)  # the request the hub died in still lands
            at_kill = ours(kube)
            hub = HubProcess(config, env, workdir=str(workdir)).start()
            figures["hub_starts"] += 1
            deadline = time.monotonic() + 40
            while ours(kube) and time.monotonic() < deadline:
                time.sleep(0.2)
            left = ours(kube)
            swept = hub.log().count("Orphan sweep: deleting")  # the log file is appended: cumulative
            figures["left_after_restart"][step] = {"at_kill": len(at_kill), "swept": swept, "after": left}
            if ("secrets", "ray-alice-ray-token") in at_kill and ("pods", "jupyter-alice") not in at_kill:
                assert swept, "an ownerless token Secret must be removed by the start-up sweep"
            if by_name:
                assert f"Orphan sweep in {kube.ns} failed" not in hub.log(), hub.log()[-3000:]
                assert not [r for r in kube.request_log if r[1] == "secrets" and r[0] in ("list", "watch")]
            assert left == [], (
                f"after a kill at {step} (objects then: {at_kill}) the restarted hub left {left}\n{hub.log()[-3000:]}"
            )
            status, user = hub.api("GET", "/users/alice")
            assert not user["servers"], user  # nothing running or pending
            for (kind, name), rv in unrelated_before.items():
                obj = kube.get_object(kind.lower() + "s", kube.ns, name)
                assert obj is not None and obj["metadata"]["resourceVersion"] == rv, (kind, name)
    finally:
        hub.stop()
    print(f"\nhub kills ({backend}, secrets {secrets_mode}): {figures}")


@pytest.mark.asyncio
@pytest.mark.parametrize("backend", ["pods", "kuberay"])
async def test_running_server_reattaches_and_survives_the_sweep(kube, ray_spawner_factory, backend):
    """A hub that crashed while a server ran: the new process re-attaches from the saved state,
    its orphan sweep (grace 0) keeps the running cluster, and stop removes everything."""
    traits = dict(ray_backend=backend, ray_orphan_grace_seconds=0, ray_orphan_sweep_interval=0, delete_grace_period=0)
    first = ray_spawner_factory(kube, "alice", **traits)
    assert (await hub_start(first, RAY)).error is None
    before = leftovers(kube)
    state = first.get_state()
    second = ray_spawner_factory(kube, "alice", **traits)  # the restarted hub's spawner
    second.load_state(state)
    assert await second.poll() is None
    assert (
        await second.sweep_orphans(
            kinds=("RayCluster", "Deployment", "Pod", "Service", "NetworkPolicy", "Secret")
            if backend == "kuberay"
            else None
        )
        == []
    )
    assert leftovers(kube) == before
    assert await hub_stop(second) is None
    assert await settle(kube) == []
    await asyncio.sleep(0)
