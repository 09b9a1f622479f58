"""The orphan sweep: only rayspawner's own objects, only when their notebook pod is gone."""

from __future__ import annotations

import asyncio
import datetime as dt

from rayspawner.sweep import find_orphans

from .spawner_fixtures import ray_objects

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


async def test_sweep_against_api_server(k8s_emu, ray_spawner_factory):
    sp = ray_spawner_factory(k8s_emu, ray_orphan_grace_seconds=0, ray_orphan_sweep_interval=0)
    sp.user_options = {"profile": "ray", "workers": "1"}
    await asyncio.wait_for(sp.start(), 30)
    live_before = ray_objects(k8s_emu)
    # a hub that died between creating the token Secret and the notebook pod left this:
    k8s_emu.create_object(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "ray-carol-ray-token",
                "namespace": "jhub",
                "labels": {**MANAGED, "ray.io/cluster": "ray-carol"},
            },
            "data": {},
        }
    )
    # somebody else's ownerless objects are never touched
    k8s_emu.create_object(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "unrelated", "namespace": "jhub"}, "data": {}}
    )
    k8s_emu.create_object(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "other-svc", "namespace": "jhub", "labels": {"app.kubernetes.io/managed-by": "helm"}},
            "spec": {"ports": [{"port": 80}]},
        }
    )
    deleted = await sp.sweep_orphans()
    assert deleted == [("Secret", "ray-carol-ray-token")]
    assert ray_objects(k8s_emu) == live_before  # alice's running cluster untouched
    assert k8s_emu.get_object("secrets", "jhub", "unrelated") is not None
    assert k8s_emu.get_object("services", "jhub", "other-svc") is not None
    await sp.stop()
