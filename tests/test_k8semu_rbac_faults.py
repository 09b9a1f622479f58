"""k8semu RBAC mode (tokens, Roles/RoleBindings from YAML, 401/403 bodies) and fault injection."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client import ApiException

from tests.k8semu import K8sEmu

HUB = "system:serviceaccount:jhub:hub"

RBAC_YAML = """
apiVersion: v1
kind: ServiceAccount
metadata: {name: hub, namespace: jhub}
---
kind: Role
apiVersion: rbac.authorization.k8s.io/v1
metadata: {name: hub, namespace: jhub}
rules:
  - apiGroups: [""]
    resources: [pods, persistentvolumeclaims, secrets, services]
    verbs: [get, watch, list, create, delete]
  - apiGroups: [""]
    resources: [events]
    verbs: [get, watch, list]
  - apiGroups: [""]
    resources: [pods/log]
    resourceNames: [allowed]
    verbs: [get]
---
kind: RoleBinding
apiVersion: rbac.authorization.k8s.io/v1
metadata: {name: hub, namespace: jhub}
subjects:
  - kind: ServiceAccount
    name: hub
    namespace: jhub
roleRef: {kind: Role, name: hub, apiGroup: rbac.authorization.k8s.io}
"""


def pod(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "i"}]}}


@pytest.fixture
def rbac_emu(k8s_emu_factory: Any, tmp_path: Path) -> K8sEmu:
    f = tmp_path / "rbac.yaml"
    f.write_text(RBAC_YAML)
    return k8s_emu_factory(kuberay=True, rbac_files=[f], tokens={"hub-token": HUB})


async def test_rbac_allow_and_deny(rbac_emu: K8sEmu) -> None:
    api = await config.new_client_from_config(config_file=str(rbac_emu.kubeconfig_for("hub-token")))
    async with api:
        v1 = client.CoreV1Api(api)
        await v1.create_namespaced_pod("jhub", pod("p1"))
        assert [p.metadata.name for p in (await v1.list_namespaced_pod("jhub")).items] == ["p1"]
        with pytest.raises(ApiException) as ei:
            await v1.patch_namespaced_pod("p1", "jhub", {"metadata": {"labels": {"a": "b"}}})
        assert ei.value.status == 403
        assert json.loads(ei.value.body) == {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": f'pods "p1" is forbidden: User "{HUB}" cannot patch resource "pods" in API group "" '
            'in the namespace "jhub"',
            "reason": "Forbidden",
            "details": {"name": "p1", "kind": "pods"},
            "code": 403,
        }
        with pytest.raises(ApiException) as ei:
            await v1.create_namespaced_pod("other", pod("p2"))
        assert json.loads(ei.value.body)["message"] == (
            f'pods is forbidden: User "{HUB}" cannot create resource "pods" in API group "" in the namespace "other"'
        )
        with pytest.raises(ApiException) as ei:
            await v1.list_pod_for_all_namespaces()
        assert json.loads(ei.value.body)["message"].endswith("at the cluster scope")
        co = client.CustomObjectsApi(api)
        with pytest.raises(ApiException) as ei:
            await co.create_namespaced_custom_object(
                "ray.io",
                "v1",
                "jhub",
                "rayclusters",
                {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "rc"}, "spec": {}},
            )
        b = json.loads(ei.value.body)
        assert b["message"] == (
            f'rayclusters.ray.io is forbidden: User "{HUB}" cannot create resource "rayclusters" '
            'in API group "ray.io" in the namespace "jhub"'
        )
        assert b["details"] == {"group": "ray.io", "kind": "rayclusters"}
        # subresource + resourceNames
        await v1.create_namespaced_pod("jhub", pod("allowed"))
        assert await v1.read_namespaced_pod_log("allowed", "jhub") is not None
        with pytest.raises(ApiException) as ei:
            await v1.read_namespaced_pod_log("p1", "jhub")
        assert 'cannot get resource "pods/log"' in json.loads(ei.value.body)["message"]

        # the admin adds a rule at runtime: it takes effect
        rbac_emu.create_object(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": "ray", "namespace": "jhub"},
                "rules": [{"apiGroups": ["ray.io"], "resources": ["rayclusters"], "verbs": ["*"]}],
            }
        )
        rbac_emu.create_object(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": "ray", "namespace": "jhub"},
                "subjects": [{"kind": "ServiceAccount", "name": "hub", "namespace": "jhub"}],
                "roleRef": {"kind": "Role", "name": "ray", "apiGroup": "rbac.authorization.k8s.io"},
            }
        )
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


async def test_rbac_401_and_admin(rbac_emu: K8sEmu) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(rbac_emu.url + "/api/v1/namespaces/jhub/pods") as r:
            assert r.status == 401
            assert await r.json() == {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": "Unauthorized",
                "reason": "Unauthorized",
                "code": 401,
            }
        async with s.get(rbac_emu.url + "/api/v1/pods", headers={"Authorization": "Bearer wrong"}) as r:
            assert r.status == 401
        async with s.get(
            rbac_emu.url + "/api/v1/pods", headers={"Authorization": f"Bearer {rbac_emu.admin_token}"}
        ) as r:
            assert r.status == 200
    # the default kubeconfig uses the admin token
    api = await config.new_client_from_config(config_file=str(rbac_emu.kubeconfig_path))
    async with api:
        await client.CoreV1Api(api).create_namespaced_config_map("anywhere", {"metadata": {"name": "x"}})


async def test_faults_500_429_403_409(k8s_emu: K8sEmu, k8s_emu_client: Any) -> None:
    v1 = client.CoreV1Api(k8s_emu_client)
    k8s_emu.faults.add("create", "pods", status=500)
    with pytest.raises(ApiException) as ei:
        await v1.create_namespaced_pod("f", pod("a"))
    assert ei.value.status == 500 and json.loads(ei.value.body)["reason"] == "InternalError"
    await v1.create_namespaced_pod("f", pod("a"))  # count=1: the next one succeeds

    k8s_emu.faults.add("get", "pods", status=429, retry_after=7, count=2)
    for _ in range(2):
        with pytest.raises(ApiException) as ei:
            await v1.read_namespaced_pod("a", "f")
        assert ei.value.status == 429 and ei.value.headers["Retry-After"] == "7"
        assert json.loads(ei.value.body)["details"] == {"retryAfterSeconds": 7}
    await v1.read_namespaced_pod("a", "f")

    k8s_emu.faults.add("delete", "pods", status=403, name="a")
    with pytest.raises(ApiException) as ei:
        await v1.delete_namespaced_pod("a", "f")
    assert ei.value.status == 403 and json.loads(ei.value.body)["reason"] == "Forbidden"
    k8s_emu.faults.add("patch", "pods", status=409)
    with pytest.raises(ApiException) as ei:
        await v1.patch_namespaced_pod("a", "f", {"metadata": {"labels": {"x": "y"}}})
    assert ei.value.status == 409 and json.loads(ei.value.body)["reason"] == "Conflict"

    k8s_emu.faults.add("list", "*", status=503, count=None)
    for _ in range(3):
        with pytest.raises(ApiException):
            await v1.list_namespaced_secret("f")
    k8s_emu.faults.clear()
    await v1.list_namespaced_secret("f")
    got = [(i["verb"], i["resource"], i["status"]) for i in k8s_emu.faults.injected]
    assert got == [
        ("create", "pods", 500),
        ("get", "pods", 429),
        ("get", "pods", 429),
        ("delete", "pods", 403),
        ("patch", "pods", 409),
        ("list", "secrets", 503),
        ("list", "secrets", 503),
        ("list", "secrets", 503),
    ]


async def test_fault_latency(k8s_emu: K8sEmu, k8s_emu_client: Any) -> None:
    v1 = client.CoreV1Api(k8s_emu_client)
    k8s_emu.faults.add("list", "configmaps", latency=0.3)
    t0 = time.monotonic()
    await v1.list_namespaced_config_map("f")
    assert time.monotonic() - t0 >= 0.3
    t0 = time.monotonic()
    await v1.list_namespaced_config_map("f")
    assert time.monotonic() - t0 < 0.3


async def test_fault_dropped_watch(k8s_emu: K8sEmu, k8s_emu_client: Any) -> None:
    v1 = client.CoreV1Api(k8s_emu_client)
    await v1.create_namespaced_config_map("f", {"metadata": {"name": "x"}})
    k8s_emu.faults.add("watch", "configmaps", drop_watch=True)
    seen = []
    t0 = time.monotonic()
    with pytest.raises(aiohttp.ClientPayloadError):  # the stream is cut mid-chunk
        async with watch.Watch().stream(v1.list_namespaced_config_map, "f", timeout_seconds=5) as stream:
            async for ev in stream:
                seen.append(ev["type"])
    assert seen == ["ADDED"] and time.monotonic() - t0 < 3  # dropped at once, not at timeoutSeconds
    assert k8s_emu.faults.injected[-1]["drop_watch"] is True
    await asyncio.sleep(0.1)
    assert k8s_emu.open_watches.current == 0 and k8s_emu.open_watches.peak >= 1
    # the next watch works normally
    async with watch.Watch().stream(v1.list_namespaced_config_map, "f", timeout_seconds=1) as stream:
        async for ev in stream:
            seen.append(ev["type"])
    assert seen[-1] == "ADDED"
