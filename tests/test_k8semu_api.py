"""k8semu API semantics through the real kubernetes_asyncio client: CRUD, Status bodies,
selectors, patches, watch resume/timeout/410, discovery."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client import ApiException

from tests.k8semu import K8sEmu


def pod(name: str | None = None, labels: dict[str, str] | None = None, **meta: Any) -> dict[str, Any]:
    md: dict[str, Any] = {"labels": labels or {}, **meta}
    if name:
        md["name"] = name
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": md,
        "spec": {"containers": [{"name": "c", "image": "busybox", "env": [{"name": "A", "value": "1"}]}]},
    }


def body(e: ApiException) -> dict[str, Any]:
    return json.loads(e.body)


async def test_create_get_generate_name_uid_rv(k8s_emu_client: Any) -> None:
    v1 = client.CoreV1Api(k8s_emu_client)
    a = await v1.create_namespaced_pod("t1", pod(generateName="web-"))
    b = await v1.create_namespaced_pod("t1", pod(generateName="web-"))
    assert a.metadata.name.startswith("web-") and len(a.metadata.name) == len("web-") + 5
    assert a.metadata.name != b.metadata.name and a.metadata.uid != b.metadata.uid
    assert int(b.metadata.resource_version) > int(a.metadata.resource_version)
    assert a.metadata.creation_timestamp is not None
    got = await v1.read_namespaced_pod(a.metadata.name, "t1")
    assert got.metadata.uid == a.metadata.uid
    # namespaces are created on first write
    assert (await v1.read_namespace("t1")).status.phase == "Active"


async def test_status_bodies_409_422_404(k8s_emu_client: Any) -> None:
    v1 = client.CoreV1Api(k8s_emu_client)
    apps = client.AppsV1Api(k8s_emu_client)
    await v1.create_namespaced_pod("t1", pod("p1"))
    with pytest.raises(ApiException) as ei:
        await v1.create_namespaced_pod("t1", pod("p1"))
    assert ei.value.status == 409
    assert body(ei.value) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'pods "p1" already exists',
        "reason": "AlreadyExists",
        "details": {"name": "p1", "kind": "pods"},
        "code": 409,
    }
    with pytest.raises(ApiException) as ei:
        await v1.create_namespaced_pod("t1", pod("Bad_Name"))
    b = body(ei.value)
    assert ei.value.status == 422 and b["reason"] == "Invalid" and b["code"] == 422
    assert b["message"].startswith(
        'Pod "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain'
    )
    assert b["details"]["kind"] == "Pod" and b["details"]["causes"][0]["field"] == "metadata.name"
    with pytest.raises(ApiException) as ei:
        await v1.create_namespaced_pod("t1", pod("ok", labels={"bad key!": "x"}))
    assert ei.value.status == 422
    with pytest.raises(ApiException) as ei:
        await v1.create_namespaced_service("t1", {"metadata": {"name": "1svc"}, "spec": {"ports": [{"port": 80}]}})
    assert ei.value.status == 422 and "DNS-1035" in body(ei.value)["message"]
    with pytest.raises(ApiException) as ei:
        await v1.read_namespaced_pod("nope", "t1")
    assert body(ei.value) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'pods "nope" not found',
        "reason": "NotFound",
        "details": {"name": "nope", "kind": "pods"},
        "code": 404,
    }
    with pytest.raises(ApiException) as ei:
        await apps.read_namespaced_deployment("nope", "t1")
    assert body(ei.value)["details"] == {"name": "nope", "group": "apps", "kind": "deployments"}
    assert body(ei.value)["message"] == 'deployments.apps "nope" not found'


async def test_label_and_field_selectors(k8s_emu_client: Any, k8s_emu: K8sEmu) -> None:
    v1 = client.CoreV1Api(k8s_emu_client)
    await v1.create_namespaced_pod("s", pod("a", {"app": "x", "tier": "web"}))
    await v1.create_namespaced_pod("s", pod("b", {"app": "y", "tier": "db"}))
    await v1.create_namespaced_pod("s", pod("c", {"app": "z"}))
    await v1.create_namespaced_pod("other", pod("d", {"app": "x"}))

    async def names(ns: str | None = None, **kw: Any) -> list[str]:
        if ns is None:
            res = await v1.list_pod_for_all_namespaces(**kw)
        else:
            res = await v1.list_namespaced_pod(ns, **kw)
        return sorted(p.metadata.name for p in res.items)

    assert await names("s", label_selector="app=x") == ["a"]
    assert await names("s", label_selector="app==y") == ["b"]
    assert await names("s", label_selector="app!=x") == ["b", "c"]
    assert await names("s", label_selector="app in (x, z)") == ["a", "c"]
    assert await names("s", label_selector="app notin (x,z)") == ["b"]
    assert await names("s", label_selector="tier") == ["a", "b"]
    assert await names("s", label_selector="!tier") == ["c"]
    assert await names("s", label_selector="app in (x,y),tier!=db") == ["a"]
    assert await names(label_selector="app=x") == ["a", "d"]
    assert await names(field_selector="metadata.namespace=other") == ["d"]
    assert await names("s", field_selector="metadata.name=b") == ["b"]
    assert await names("s", field_selector="metadata.name!=b") == ["a", "c"]
    k8s_emu.wait_for(lambda: all(p["status"].get("phase") == "Running" for p in k8s_emu.list_objects("pods")))
    assert await names("s", field_selector="status.phase=Running") == ["a", "b", "c"]
    assert await names("s", field_selector="status.phase=Pending") == []
    ev = await v1.list_namespaced_event("s", field_selector="involvedObject.kind=Pod,involvedObject.name=a")
    assert ev.items and {e.involved_object.name for e in ev.items} == {"a"}
    with pytest.raises(ApiException) as ei:
        await v1.list_namespaced_pod("s", label_selector="app in (x")
    assert ei.value.status == 400
    # resourceVersion=0 lists work and report a resourceVersion
    raw = await v1.list_namespaced_pod("s", resource_version="0", resource_version_match="NotOlderThan")
    assert len(raw.items) == 3 and int(raw.metadata.resource_version) > 0


async def test_patch_types_replace_and_conflict(k8s_emu_client: Any) -> None:
    v1 = client.CoreV1Api(k8s_emu_client)
    await v1.create_namespaced_pod("p", pod("x", {"a": "1"}))
    # strategic merge (dict body): labels merged, containers merged by name
    p = await v1.patch_namespaced_pod(
        "x",
        "p",
        {
            "metadata": {"labels": {"b": "2"}},
            "spec": {"containers": [{"name": "c", "env": [{"name": "B", "value": "2"}]}]},
        },
    )
    assert p.metadata.labels == {"a": "1", "b": "2"}
    assert [e.name for e in p.spec.containers[0].env] == ["A", "B"] and p.spec.containers[0].image == "busybox"
    # merge patch: lists replaced, null deletes
    p = await v1.patch_namespaced_pod(
        "x", "p", {"metadata": {"labels": {"a": None}}}, _content_type="application/merge-patch+json"
    )
    assert p.metadata.labels == {"b": "2"}
    # JSON patch
    p = await v1.patch_namespaced_pod(
        "x",
        "p",
        [
            {"op": "add", "path": "/metadata/annotations", "value": {"k": "v"}},
            {"op": "replace", "path": "/metadata/labels/b", "value": "3"},
        ],
    )
    assert p.metadata.annotations == {"k": "v"} and p.metadata.labels == {"b": "3"}
    # ownerReferences merged by uid
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "o", "uid": "u-1"}
    cm = await v1.create_namespaced_config_map("p", {"metadata": {"name": "o"}})
    ref["uid"] = cm.metadata.uid
    p = await v1.patch_namespaced_pod("x", "p", {"metadata": {"ownerReferences": [ref]}})
    assert p.metadata.owner_references[0].uid == cm.metadata.uid
    # replace with a stale resourceVersion -> 409 Conflict
    stale = p.metadata.resource_version
    await v1.patch_namespaced_pod("x", "p", {"metadata": {"labels": {"c": "4"}}})
    p.metadata.resource_version = stale
    with pytest.raises(ApiException) as ei:
        await v1.replace_namespaced_pod("x", "p", p)
    assert ei.value.status == 409 and body(ei.value)["reason"] == "Conflict"
    assert "the object has been modified" in body(ei.value)["message"]
    # replace with the current one works; status is ignored on the main resource. The sim kubelet
    # updates the pod's status meanwhile, so do what real clients do: re-read and retry on 409.
    for attempt in range(20):
        cur = await v1.read_namespaced_pod("x", "p")
        cur.metadata.labels["d"] = "5"
        cur.status.phase = "Failed"
        try:
            new = await v1.replace_namespaced_pod("x", "p", cur)
            break
        except ApiException as e:
            if e.status != 409 or attempt == 19:
                raise
    assert new.metadata.labels["d"] == "5" and new.status.phase != "Failed"
    # strategic merge on a deployment's spec.replicas
    apps = client.AppsV1Api(k8s_emu_client)
    await apps.create_namespaced_deployment(
        "p",
        {
            "metadata": {"name": "d"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "d"}},
                "template": {
                    "metadata": {"labels": {"app": "d"}},
                    "spec": {"containers": [{"name": "c", "image": "i"}]},
                },
            },
        },
    )
    d = await apps.patch_namespaced_deployment("d", "p", {"spec": {"replicas": 3}})
    assert d.spec.replicas == 3 and d.metadata.generation == 2


async def test_watch_resume_and_timeout(k8s_emu_client: Any) -> None:
    v1 = client.CoreV1Api(k8s_emu_client)
    await v1.create_namespaced_config_map("w", {"metadata": {"name": "one", "labels": {"w": "1"}}})
    lst = await v1.list_namespaced_config_map("w")
    rv = lst.metadata.resource_version
    await v1.create_namespaced_config_map("w", {"metadata": {"name": "two", "labels": {"w": "1"}}})
    await v1.patch_namespaced_config_map("one", "w", {"data": {"k": "v"}})
    await v1.create_namespaced_config_map("w", {"metadata": {"name": "other"}})
    await v1.delete_namespaced_config_map("two", "w")
    seen = []
    t0 = time.monotonic()
    async with watch.Watch().stream(
        v1.list_namespaced_config_map, "w", label_selector="w=1", resource_version=rv, timeout_seconds=1
    ) as stream:
        async for ev in stream:
            seen.append((ev["type"], ev["object"].metadata.name))
    elapsed = time.monotonic() - t0
    assert seen == [("ADDED", "two"), ("MODIFIED", "one"), ("DELETED", "two")]
    assert 0.9 <= elapsed < 3, elapsed  # timeoutSeconds closed the stream

    # resourceVersion "0": synthetic ADDED for what exists
    seen = []
    async with watch.Watch().stream(
        v1.list_namespaced_config_map, "w", resource_version="0", timeout_seconds=1
    ) as stream:
        async for ev in stream:
            seen.append((ev["type"], ev["object"].metadata.name))
    assert sorted(seen) == [("ADDED", "one"), ("ADDED", "other")]


async def test_watch_label_transitions_and_live_events(k8s_emu_client: Any) -> None:
    v1 = client.CoreV1Api(k8s_emu_client)
    lst = await v1.list_namespaced_config_map("w2")
    seen: list[tuple[str, str]] = []

    async def consume() -> None:
        async with watch.Watch().stream(
            v1.list_namespaced_config_map,
            "w2",
            label_selector="sel=yes",
            resource_version=lst.metadata.resource_version,
            timeout_seconds=2,
        ) as stream:
            async for ev in stream:
                seen.append((ev["type"], ev["object"].metadata.name))

    task = asyncio.ensure_future(consume())
    await asyncio.sleep(0.2)
    await v1.create_namespaced_config_map("w2", {"metadata": {"name": "a"}})
    await v1.patch_namespaced_config_map("a", "w2", {"metadata": {"labels": {"sel": "yes"}}})
    await v1.patch_namespaced_config_map("a", "w2", {"metadata": {"labels": {"sel": "no"}}})
    await task
    assert seen == [("ADDED", "a"), ("DELETED", "a")]


async def test_watch_410_gone(k8s_emu_factory: Any) -> None:
    emu = k8s_emu_factory(history_size=5)
    from kubernetes_asyncio import config

    api = await config.new_client_from_config(config_file=str(emu.kubeconfig_path))
    async with api:
        v1 = client.CoreV1Api(api)
        first = await v1.create_namespaced_config_map("g", {"metadata": {"name": "c0"}})
        for i in range(1, 10):
            await v1.create_namespaced_config_map("g", {"metadata": {"name": f"c{i}"}})
        with pytest.raises(ApiException) as ei:
            async with watch.Watch().stream(
                v1.list_namespaced_config_map, "g", resource_version=first.metadata.resource_version, timeout_seconds=1
            ) as stream:
                async for _ in stream:
                    pass
        assert ei.value.status == 410


async def test_discovery_without_kuberay(k8s_emu: K8sEmu) -> None:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {k8s_emu.admin_token}"}) as s:

        async def get(path: str) -> tuple[int, Any]:
            async with s.get(k8s_emu.url + path) as r:
                return r.status, await r.json(content_type=None)

        st, v = await get("/version")
        assert st == 200 and v["major"] == "1"
        st, api = await get("/api")
        assert api["kind"] == "APIVersions" and api["versions"] == ["v1"]
        st, core = await get("/api/v1")
        names = {r["name"]: r for r in core["resources"]}
        assert {
            "pods",
            "services",
            "secrets",
            "configmaps",
            "events",
            "persistentvolumeclaims",
            "namespaces",
            "serviceaccounts",
            "pods/log",
            "pods/status",
        } <= set(names)
        assert (
            names["pods"]["kind"] == "Pod" and names["pods"]["namespaced"] is True and "watch" in names["pods"]["verbs"]
        )
        assert names["namespaces"]["namespaced"] is False
        st, apis = await get("/apis")
        groups = {g["name"] for g in apis["groups"]}
        assert {"apps", "networking.k8s.io", "rbac.authorization.k8s.io"} <= groups and "ray.io" not in groups
        st, apps = await get("/apis/apps/v1")
        assert {"deployments", "replicasets"} <= {r["name"] for r in apps["resources"]}
        st, g = await get("/apis/networking.k8s.io")
        assert g["preferredVersion"]["groupVersion"] == "networking.k8s.io/v1"
        st, _ = await get("/apis/ray.io/v1")
        assert st == 404
        st, b = await get("/apis/ray.io/v1/namespaces/default/rayclusters")
        assert st == 404 and b["kind"] == "Status"


async def test_discovery_with_kuberay(k8s_emu_kuberay: K8sEmu) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(k8s_emu_kuberay.url + "/apis") as r:
            assert "ray.io" in {g["name"] for g in (await r.json())["groups"]}
        async with s.get(k8s_emu_kuberay.url + "/apis/ray.io/v1") as r:
            res = {x["name"]: x for x in (await r.json())["resources"]}
            assert res["rayclusters"]["kind"] == "RayCluster" and res["rayclusters"]["namespaced"]
            assert "rayclusters/status" in res


async def test_deletecollection_and_status_subresource(k8s_emu_client: Any, k8s_emu: K8sEmu) -> None:
    v1 = client.CoreV1Api(k8s_emu_client)
    for i in range(3):
        await v1.create_namespaced_secret("dc", {"metadata": {"name": f"s{i}", "labels": {"g": "1" if i else "2"}}})
    await v1.delete_collection_namespaced_secret("dc", label_selector="g=1")
    assert [s["metadata"]["name"] for s in k8s_emu.list_objects("secrets", "dc")] == ["s0"]
    await v1.create_namespaced_persistent_volume_claim(
        "dc",
        {
            "metadata": {"name": "c"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        },
    )
    out = await v1.patch_namespaced_persistent_volume_claim_status("c", "dc", {"status": {"phase": "Bound"}})
    assert out.status.phase == "Bound"
    assert ("patch", "persistentvolumeclaims/status", "dc", "c") in k8s_emu.request_log


async def test_custom_object_patch_content_types(k8s_emu_kuberay: K8sEmu) -> None:
    from kubernetes_asyncio import config

    api = await config.new_client_from_config(config_file=str(k8s_emu_kuberay.kubeconfig_path))
    async with api:
        co = client.CustomObjectsApi(api)
        await co.create_namespaced_custom_object(
            "ray.io",
            "v1",
            "jhub",
            "rayclusters",
            {
                "apiVersion": "ray.io/v1",
                "kind": "RayCluster",
                "metadata": {"name": "rc"},
                "spec": {"headGroupSpec": {"template": {"spec": {"containers": [{"name": "h", "image": "i"}]}}}},
            },
        )
        # a dict body is sent as json-patch by the generated client: the real server answers 400
        with pytest.raises(ApiException) as ei:
            await co.patch_namespaced_custom_object(
                "ray.io", "v1", "jhub", "rayclusters", "rc", {"metadata": {"labels": {"a": "b"}}}
            )
        assert ei.value.status == 400 and "jsonPatchOp" in body(ei.value)["message"]
        # strategic merge is not supported for custom resources
        with pytest.raises(ApiException) as ei:
            await co.patch_namespaced_custom_object(
                "ray.io",
                "v1",
                "jhub",
                "rayclusters",
                "rc",
                {"metadata": {"labels": {"a": "b"}}},
                _content_type="application/strategic-merge-patch+json",
            )
        assert ei.value.status == 415
        rc = await co.patch_namespaced_custom_object(
            "ray.io",
            "v1",
            "jhub",
            "rayclusters",
            "rc",
            {"metadata": {"labels": {"a": "b"}}},
            _content_type="application/merge-patch+json",
        )
        assert rc["metadata"]["labels"] == {"a": "b"}
        # status subresource of a custom resource
        st = await co.get_namespaced_custom_object_status("ray.io", "v1", "jhub", "rayclusters", "rc")
        assert st["metadata"]["name"] == "rc"
        lst = await co.list_namespaced_custom_object("ray.io", "v1", "jhub", "rayclusters")
        assert lst["kind"] == "RayClusterList" and lst["items"][0]["kind"] == "RayCluster"
