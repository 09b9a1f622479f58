"""The orphan sweep: only rayspawner's own objects, only when their notebook pod is gone."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from testcluster.fixtures import hub_rbac_documents

from rayspawner.errors import ClusterStartError
from rayspawner.sweep import find_orphans

from .reliability_helpers import add_nth_fault
from .spawner_fixtures import ray_objects, wait_until

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.timezone.utc)
OLD = "2026-11-25T11:00:00Z"
NEW = "2026-11-25T11:59:30Z"
MANAGED = {"app.kubernetes.io/managed-by": "rayspawner"}


def obj(name, labels=MANAGED, owners=None, created=OLD, deleting=False):
    meta = {"name": name, "labels": dict(labels), "creationTimestamp": created}
    if owners is not None:
        meta["ownerReferences"] = [{"kind": k, "uid": u, "name": "x", "apiVersion": "v1"} for k, u in owners]
    if deleting:
        meta["deletionTimestamp"] = NEW
    return {"metadata": meta}


def test_find_orphans_rules():
    objects = [
        obj("ownerless"),
        obj("dead-owner", owners=[("Pod", "dead")]),
        obj("live-owner", owners=[("Pod", "live")]),
        obj("young-ownerless", created=NEW),
        obj("young-dead-owner", owners=[("Pod", "dead")], created=NEW),
        obj("not-ours", labels={"app": "other"}),
        obj("not-ours-dead-owner", labels={}, owners=[("Pod", "dead")]),
        obj("owned-by-replicaset", owners=[("ReplicaSet", "rs")]),
        obj("already-deleting", deleting=True),
    ]
    names = [o["metadata"]["name"] for o in find_orphans(objects, {"live"}, NOW, grace_seconds=120)]
    assert names == ["ownerless", "dead-owner"]


async def test_sweep_against_api_server(kube, ray_spawner_factory):
    sp = ray_spawner_factory(kube, ray_orphan_grace_seconds=0, ray_orphan_sweep_interval=0)
    sp.user_options = {"profile": "ray", "workers": "1"}
    await asyncio.wait_for(sp.start(), 30)
    live_before = ray_objects(kube)
    # a hub that died between creating the token Secret and the notebook pod left this:
    kube.create_object(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "ray-carol-ray-token",
                "namespace": kube.ns,
                "labels": {**MANAGED, "ray.io/cluster": "ray-carol"},
            },
            "data": {},
        }
    )
    # somebody else's ownerless objects are never touched
    kube.create_object(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "unrelated", "namespace": kube.ns}, "data": {}}
    )
    kube.create_object(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "other-svc", "namespace": kube.ns, "labels": {"app.kubernetes.io/managed-by": "helm"}},
            "spec": {"ports": [{"port": 80}]},
        }
    )
    deleted = await sp.sweep_orphans()
    assert deleted == [("Secret", "ray-carol-ray-token")]
    assert ray_objects(kube) == live_before  # alice's running cluster untouched
    assert kube.get_object("secrets", kube.ns, "unrelated") is not None
    assert kube.get_object("services", kube.ns, "other-svc") is not None
    await sp.stop()


@pytest.mark.parametrize("backend", ["pods", "kuberay"])
async def test_by_name_secret_is_owned_by_the_notebook_from_its_creation(
    kube_factory, ray_spawner_factory, backend
) -> None:
    """ray_orphan_sweep_secrets = "by-name": no ownerless token Secret ever exists (so no
    sweep must list Secrets to find one): it is created after the notebook pod and the
    cluster's NetworkPolicy, owned by the pod, and never patched."""
    emu = kube_factory()
    sp = ray_spawner_factory(emu, ray_backend=backend, ray_orphan_sweep_secrets="by-name", ray_orphan_sweep_interval=0)
    sp.user_options = {"profile": "ray", "workers": "1"}
    emu.reset_request_log()
    await asyncio.wait_for(sp.start(), 30)
    writes = [(v, r, n) for v, r, ns, n in emu.request_log if ns == emu.ns and v in ("create", "patch")]
    secret_writes = [w for w in writes if w[1] == "secrets"]
    # a dry run before the notebook pod (nothing stored: it only checks the hub may), then the create
    assert secret_writes == [("create", "secrets", None)] * 2, secret_writes
    order = [(v, r) for v, r, _ in writes]
    created = len(order) - 1 - order[::-1].index(("create", "secrets"))
    assert order.index(("create", "pods")) < created
    assert order.index(("create", "networkpolicies")) < created
    notebook = emu.get_object("pods", emu.ns, "jupyter-alice")
    secret = emu.get_object("secrets", emu.ns, "ray-alice-ray-token")
    assert [o["uid"] for o in secret["metadata"]["ownerReferences"]] == [notebook["metadata"]["uid"]]
    assert not [r for r in emu.request_log if r[1] == "secrets" and r[0] in ("list", "watch")]
    await sp.stop()


async def test_by_name_sweep_deletes_only_its_clusters_token_by_name(kube, ray_spawner_factory) -> None:
    """The sweep finds a token Secret through its cluster's orphaned objects, reads it by name,
    and leaves a Secret of that name alone unless it is labelled as that cluster's."""
    sp = ray_spawner_factory(
        kube, ray_orphan_grace_seconds=0, ray_orphan_sweep_interval=0, ray_orphan_sweep_secrets="by-name"
    )
    sp.user_options = {"profile": "ray", "workers": "1"}
    await asyncio.wait_for(sp.start(), 30)
    live_before = ray_objects(kube)
    for cluster, secret_labels in (
        ("ray-carol", {**MANAGED, "ray.io/cluster": "ray-carol"}),
        ("ray-dave", {"app.kubernetes.io/managed-by": "helm", "ray.io/cluster": "ray-dave"}),
    ):
        kube.create_object(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {
                    "name": f"{cluster}-head-svc",
                    "namespace": kube.ns,
                    "labels": {**MANAGED, "ray.io/cluster": cluster},
                },
                "spec": {"ports": [{"port": 6379}]},
            }
        )
        kube.create_object(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": f"{cluster}-ray-token", "namespace": kube.ns, "labels": secret_labels},
                "data": {},
            }
        )
    # an ownerless token Secret with nothing else of its cluster: found only by listing
    kube.create_object(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "ray-erin-ray-token", "namespace": kube.ns, "labels": {**MANAGED}},
            "data": {},
        }
    )
    kube.reset_request_log()
    deleted = await sp.sweep_orphans()
    assert sorted(deleted) == [
        ("Secret", "ray-carol-ray-token"),
        ("Service", "ray-carol-head-svc"),
        ("Service", "ray-dave-head-svc"),
    ]
    assert kube.get_object("secrets", kube.ns, "ray-dave-ray-token") is not None
    assert kube.get_object("secrets", kube.ns, "ray-erin-ray-token") is not None
    assert not [r for r in kube.request_log if r[1] == "secrets" and r[0] in ("list", "watch")]
    assert [r for r in kube.request_log if r[1] == "secrets"] == [
        ("get", "secrets", kube.ns, "ray-carol-ray-token"),
        ("get", "secrets", kube.ns, "ray-dave-ray-token"),
        ("delete", "secrets", kube.ns, "ray-carol-ray-token"),
    ]
    assert ray_objects(kube) == sorted([*live_before, ("secrets", "ray-erin-ray-token")])
    await sp.stop()


async def test_by_name_refuses_a_secret_it_may_not_create_before_the_notebook_exists(kube, ray_spawner_factory) -> None:
    """With the Secret made only after the notebook pod, a refused create would show as the
    notebook's start timeout; the dry run fails the spawn first, naming the reason, and
    nothing is created (here: a Secret of that name belongs to another server)."""
    kube.create_object(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "ray-alice-ray-token",
                "namespace": kube.ns,
                "labels": {**MANAGED, "ray.io/cluster": "ray-alice", "hub.jupyter.org/username": "bob"},
            },
            "data": {},
        }
    )
    before = kube.get_object("secrets", kube.ns, "ray-alice-ray-token")["metadata"]["resourceVersion"]
    sp = ray_spawner_factory(kube, ray_orphan_sweep_secrets="by-name", ray_orphan_sweep_interval=0)
    sp.user_options = {"profile": "ray", "workers": "1"}
    started = asyncio.get_running_loop().time()
    with pytest.raises(ClusterStartError, match="belongs to another server"):
        await asyncio.wait_for(sp.start(), 30)
    assert asyncio.get_running_loop().time() - started < 10
    assert kube.get_object("pods", kube.ns, "jupyter-alice") is None
    assert ray_objects(kube) == [("secrets", "ray-alice-ray-token")]
    assert kube.get_object("secrets", kube.ns, "ray-alice-ray-token")["metadata"]["resourceVersion"] == before
    await sp.stop()


async def test_a_cluster_create_failing_meanwhile_fails_the_spawn_at_once(kube, ray_spawner_factory) -> None:
    """The token Secret passes its dry run, but its real create (after the notebook pod) is
    forbidden. The notebook waits for that Secret and would only time out; the spawn fails at
    once with the create's own error instead (naming the rule), and stop leaves nothing."""
    add_nth_fault(kube, "create", "secrets", 2, kube.ns, status=403)
    sp = ray_spawner_factory(kube, ray_orphan_sweep_secrets="by-name", ray_orphan_sweep_interval=0, start_timeout=60)
    sp.user_options = {"profile": "ray", "workers": "1"}
    started = asyncio.get_running_loop().time()
    with pytest.raises(ClusterStartError, match="not allowed to create secrets"):
        await asyncio.wait_for(sp.start(), 45)
    assert asyncio.get_running_loop().time() - started < 15
    await sp.stop()  # what JupyterHub does after a failed start
    assert ray_objects(kube) == []
    assert kube.get_object("pods", kube.ns, "jupyter-alice") is None


async def test_periodic_sweep_of_a_pods_hub_needs_no_raycluster_rule(kube_factory, ray_spawner_factory) -> None:
    """A hub set to plain pods, with role-pods.yaml alone, on a cluster where KubeRay is
    installed: the periodic sweep lists no RayClusters (its Role may not) and removes the
    ownerless token Secret a crashed hub left."""
    kube = kube_factory(rbac=hub_rbac_documents(("role-pods.yaml",)))
    assert kube.kuberay  # installed on the test cluster: the sweep must not go by that alone
    orphan = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "ray-carol-ray-token", "labels": {**MANAGED, "ray.io/cluster": "ray-carol"}},
        "data": {},
    }
    kube.create_object(orphan, kube.ns)
    sp = ray_spawner_factory(kube, ray_backend="pods", ray_orphan_grace_seconds=0, ray_orphan_sweep_interval=1)
    kube.reset_request_log()
    task = asyncio.ensure_future(sp._sweep_forever())
    try:
        await wait_until(lambda: kube.get_object("secrets", kube.ns, "ray-carol-ray-token") is None)
    finally:
        task.cancel()
    assert not [r for r in kube.request_log if r[1] == "rayclusters"], kube.request_log
