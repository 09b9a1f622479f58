"""Lifecycle races, both backends: stop during start (at each step), start while the
previous stop is still tearing down (same names), the notebook pod deleted or
evicted behind the hub's back (JupyterHub skips stop()), the Ray head deleted
behind the hub's back. Spawners are driven the way JupyterHub drives them
(reliability_helpers.hub_start / hub_stop)."""

from __future__ import annotations

import asyncio

import pytest

from testcluster.node.agent import EVICT
from testcluster.node.kubelet_sim import SIM_DELAYS

from .spawner_fixtures import wait_until

from .reliability_helpers import hub_start, hub_stop, leftovers, readable, settle

pytestmark = pytest.mark.asyncio

RAY = {"profile": "ray", "workers": "1"}
TRAITS = dict(
    k8s_api_request_timeout=3,
    k8s_api_request_retry_timeout=8,
    start_timeout=60,
    ray_stop_timeout=2,
    ray_orphan_sweep_interval=0,
    ray_orphan_grace_seconds=0,
    delete_grace_period=0,
)
BACKENDS = ["pods", "kuberay"]
#: (verb, resource) at which the start is held (by a slow request) when stop() comes
STOP_POINTS = {
    "pods": [
        ("list", "pods"),
        ("create", "secrets"),
        ("create", "pods"),
        ("patch", "secrets"),
        ("create", "services"),
        ("create", "deployments"),
        ("wait", "ready"),
    ],
    "kuberay": [
        ("list", "rayclusters"),
        ("create", "secrets"),
        ("create", "pods"),
        ("patch", "secrets"),
        ("create", "rayclusters"),
        ("wait", "ready"),
    ],
}


def cases():
    return [(b, v, r) for b in BACKENDS for v, r in STOP_POINTS[b]]


@pytest.mark.parametrize("backend,verb,resource", cases(), ids=[f"{b}-{v}-{r}" for b, v, r in cases()])
async def test_stop_during_start(kube, ray_spawner_factory, backend, verb, resource):
    """JupyterHub's stop of a pending server (REST DELETE while pending, or start_timeout):
    it does not cancel the start. Nothing may be created after stop() returned; a request
    the API server was already processing lands later and is ownerless or owned by the
    gone notebook pod: GC or the orphan sweep removes it."""
    slow = verb == "wait"
    if not slow:
        kube.faults.add(verb, resource, latency=1.0, namespace=kube.ns)
    # "wait": every pod's images take 3 s to pull, so the start is waiting for the head
    pull = {SIM_DELAYS: "pull=3.0"} if slow else {}
    sp = ray_spawner_factory(
        kube, "alice", ray_backend=backend, extra_annotations=pull, ray_extra_annotations=pull, **TRAITS
    )
    sp.user_options = dict(RAY)
    start = asyncio.ensure_future(sp.start())
    if slow:
        await wait_until(
            lambda: any(r[0] == "create" and r[1] in ("deployments", "rayclusters") for r in kube.request_log)
        )
    else:
        await wait_until(lambda: (verb, resource) in {(r[0], r[1]) for r in kube.request_log})
    assert not start.done()
    assert await hub_stop(sp) is None
    assert start.done(), "stop() returned while the start still runs"
    created_after = [r for r in kube.request_log if r[0] == "create"]
    await asyncio.sleep(1.2)  # requests in flight land
    assert [r for r in kube.request_log if r[0] == "create"] == created_after, "created something after stop()"
    left = await settle(kube, kube.ns, timeout=5)
    if left:  # only an ownerless Secret whose create was in flight: the sweep's case
        assert left == [("secrets", "ray-alice-ray-token")], left
        sweeper = ray_spawner_factory(kube, "admin", **TRAITS)
        await sweeper.sweep_orphans()
        assert await settle(kube, kube.ns, timeout=5) == []


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("released", [True, False], ids=["teardown-finishes", "teardown-stuck"])
async def test_start_while_previous_stop_still_tears_down(kube, ray_spawner_factory, backend, released):
    """The previous cluster is still terminating (a finalizer holds it) when the same server
    starts again: the start waits for it and then succeeds, or fails readably; nothing leaks."""
    first = ray_spawner_factory(kube, "alice", ray_backend=backend, **TRAITS)
    assert (await hub_start(first, RAY)).error is None
    held = ("rayclusters", "ray-alice") if backend == "kuberay" else ("pods", "ray-alice-head")
    kube.patch_object(held[0], kube.ns, held[1], {"metadata": {"finalizers": ["rayspawner.test/slow-teardown"]}})
    assert await hub_stop(first) is None  # returns after ray_stop_timeout with a warning
    assert kube.get_object(*held[:1], kube.ns, held[1])["metadata"].get("deletionTimestamp")

    async def release(after: float):
        await asyncio.sleep(after)
        kube.patch_object(held[0], kube.ns, held[1], {"metadata": {"finalizers": None}})

    releaser = asyncio.ensure_future(release(1.5 if released else 5.0))
    # the same server, started again (its create retries give up after 3 s)
    second = ray_spawner_factory(kube, "alice", ray_backend=backend, **{**TRAITS, "k8s_api_request_retry_timeout": 3})
    res = await hub_start(second, RAY)
    if released:
        assert res.error is None, res.error
        obj = kube.get_object(held[0], kube.ns, held[1])
        notebook = kube.get_object("pods", kube.ns, second.pod_name)
        assert obj["metadata"]["ownerReferences"][0]["uid"] == notebook["metadata"]["uid"]
        assert not obj["metadata"].get("deletionTimestamp")
        assert await hub_stop(second) is None
    else:
        message = readable(res.error)
        assert "still being removed" in message and held[1] in message, message
        assert res.stop_error is None
    await releaser
    assert await settle(kube, kube.ns) == []


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("how", ["deleted", "evicted", "deleted-hub-down"])
async def test_notebook_pod_gone_behind_the_hubs_back(kube, ray_spawner_factory, backend, how):
    """JupyterHub's poll sees the notebook gone and skips stop(): poll() and the owner GC
    remove the cluster. With no hub polling at all, GC alone does."""
    sp = ray_spawner_factory(kube, "alice", ray_backend=backend, **TRAITS)
    assert (await hub_start(sp, RAY)).error is None
    if how == "evicted":
        # the node evicts it under memory pressure (the kubelet's eviction manager)
        message = "The node was low on resource: memory."
        kube.patch_object("pods", kube.ns, sp.pod_name, {"metadata": {"annotations": {EVICT: message}}})
        key = f"{kube.ns}/{sp.pod_name}"
        await wait_until(lambda: (sp.pod_reflector.pods.get(key) or {}).get("status", {}).get("reason") == "Evicted")
    else:
        kube.delete_object("pods", kube.ns, sp.pod_name, grace_period_seconds=0)
        await wait_until(lambda: f"{kube.ns}/{sp.pod_name}" not in sp.pod_reflector.pods)
    if how != "deleted-hub-down":
        # JupyterHub's periodic poll, then user.stop(): poll() again, no stop()
        assert await sp.poll() is not None
        assert await hub_stop(sp) is None
    assert await settle(kube, kube.ns) == []


async def test_kuberay_head_pod_deleted_is_recreated_by_the_operator(kube, ray_spawner_factory):
    """KubeRay backend: the operator recreates a deleted head pod; poll keeps reporting running.
    (A deleted RayCluster fails the server: test_reliability_faults / test_kuberay_backend.)"""
    sp = ray_spawner_factory(kube, "alice", ray_backend="kuberay", **TRAITS)
    assert (await hub_start(sp, RAY)).error is None
    head = next(n for k, n in leftovers(kube) if k == "pods" and "-head-" in n)
    kube.delete_object("pods", kube.ns, head, grace_period_seconds=0)
    assert await sp.poll() is None
    await wait_until(lambda: any(k == "pods" and "-head-" in n and n != head for k, n in leftovers(kube)))
    st = await wait_until_ready(sp)
    assert st.head_ready
    assert await sp.poll() is None
    assert await hub_stop(sp) is None
    assert await settle(kube, kube.ns) == []


async def wait_until_ready(sp):
    for _ in range(200):
        st = await sp.ray_session.backend.status(sp.ray_session.spec)
        if st.head_ready:
            return st
        await asyncio.sleep(0.05)
    return st


async def test_pods_head_deleted_beyond_the_limit_fails_and_removes_the_server(kube, ray_spawner_factory):
    """Pods backend: recreated ray_head_restart_limit times, then the server is reported failed and,
    because JupyterHub then skips stop(), removed by poll() itself: notebook pod included."""
    sp = ray_spawner_factory(kube, "alice", ray_head_restart_limit=1, **TRAITS)
    assert (await hub_start(sp, RAY)).error is None
    for expected in (None, 1):
        await wait_until(lambda: kube.get_object("pods", kube.ns, "ray-alice-head"))
        kube.delete_object("pods", kube.ns, "ray-alice-head", grace_period_seconds=0)
        await wait_until(lambda: f"{kube.ns}/ray-alice-head" not in sp._ray_pods())
        assert await sp.poll() == expected
    assert await settle(kube, kube.ns) == []
    assert await hub_stop(sp) is None
