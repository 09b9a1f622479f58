"""KubeRay must be >= 1.6.0 for token auth: older CRDs prune spec.authOptions.secretName and the
operator injects its own token, so nodes and notebook would disagree. The RayCluster CRD's schema
says which (the real v1.7.0 CRD, and the same with the field removed as in 1.5.x); where the CRD
cannot be read (no ClusterRole) that is logged once and KubeRay is used.

The spawns run on the real test cluster (KubeRay v1.6.2 installed), as the hub's ServiceAccount,
with the ClusterRole docs/security.md documents where a test reads the CRD. A 1.5.x install is
the installed CRD as a 1.5.x API server would answer it (:func:`as_15`): a proxy between the hub
and the API server rewrites that one response, as the CRD is cluster-wide and the operator of
every other test reads it."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import gzip
import json
import logging
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs

import pytest
import yaml
from aiohttp import web

from testcluster.faultproxy import FaultProxy, classify
from testcluster.fixtures import Kube
from testcluster.kubeconfig import ssl_context

from rayspawner.backends import detect
from rayspawner.registry import hub_process
from rayspawner.errors import ClusterStartError

from .schemas import KUBERAY_CRD, load_schema


@pytest.fixture(scope="module")
def crd_17() -> dict:
    return load_schema(KUBERAY_CRD)


def as_15(crd: dict) -> dict:
    old = copy.deepcopy(crd)
    old["metadata"].setdefault("labels", {})["app.kubernetes.io/version"] = "v1.5.1"
    for v in old["spec"]["versions"]:
        auth = v["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"].get("authOptions")
        if auth:
            auth["properties"].pop("secretName")
    return old


def test_schema_tells_whether_token_auth_can_be_wired(crd_17):
    assert detect.token_auth_problem(crd_17) == ""
    problem = detect.token_auth_problem(as_15(crd_17))
    assert "(v1.5.1) is older than 1.6.0" in problem and "ray_backend = 'pods'" in problem
    assert detect.token_auth_problem({"spec": {"versions": [{"name": "v1alpha1"}]}})


async def test_unreadable_crd_is_logged_once_and_kuberay_used(kube, ray_spawner_factory, caplog):
    ray_spawner_factory(kube)  # points the shared client at the test cluster (the shipped Roles: no CRD read)
    log = logging.getLogger("test.kuberay.version")
    with caplog.at_level(logging.WARNING, logger="test.kuberay.version"):
        assert await detect.select_backend("kuberay", log) == "kuberay"
        assert await detect.select_backend("auto", log) == "kuberay"
    lines = [r.getMessage() for r in caplog.records if "customresourcedefinitions" in r.getMessage()]
    assert len(lines) == 1 and "HTTP 403" in lines[0], lines
    assert crd_reads(kube) == [("get", "customresourcedefinitions", None, detect.CRD_NAME)]


async def test_old_kuberay_is_refused_or_skipped(kube, ray_spawner_factory, crd_17, caplog):
    sp = ray_spawner_factory(kube)
    from kubespawner.clients import shared_client

    host = shared_client("CustomObjectsApi").api_client.configuration.host
    hub_process.kuberay_auth_problem[host] = detect.token_auth_problem(as_15(crd_17))  # what reading a 1.5.1 CRD gives
    with pytest.raises(ClusterStartError, match="older than 1.6.0") as e:
        await detect.select_backend("kuberay", sp.log)
    assert e.value.reason_label == "kuberay_too_old"
    hub_process.kuberay_auth_problem[host] = detect.token_auth_problem(as_15(crd_17))
    with caplog.at_level(logging.WARNING):
        assert await detect.select_backend("auto", sp.log) == "pods"
    assert any("Using plain pods, not KubeRay" in r.getMessage() for r in caplog.records)


# ---- end to end: RaySpawner against the real cluster, its CRD as served or as 1.5.x's ----
RAY = {"profile": "ray", "workers": "1"}
SECURITY_DOC = Path(__file__).resolve().parents[1] / "docs" / "security.md"
CRD_PATH = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{detect.CRD_NAME}"


def crd_reads(kube) -> list[tuple]:
    return [r for r in kube.request_log if r[1] == "customresourcedefinitions"]


def everything(kube) -> list[tuple[str, str]]:
    """Every object a spawn could have made (labelled or not) in the hub's namespace."""
    found = []
    for resource in ("pods", "services", "secrets", "deployments", "networkpolicies", "rayclusters"):
        found += [(resource, o["metadata"]["name"]) for o in kube.list_objects(resource, kube.ns)]
    return sorted(found)


class OldCrdProxy(FaultProxy):
    """The test's fault proxy, except that a successful read of the RayCluster CRD is answered with
    :func:`as_15` of what the API server returned (so RBAC still decides whether it may be read)."""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.method != "GET" or request.path != CRD_PATH:
            return await super()._handle(request)
        info = classify(request.method, request.path, parse_qs(request.query_string))
        self.request_log.append((info.verb, info.resource, info.namespace, info.name))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "accept-encoding")}
        assert self._session is not None
        async with self._session.get(self.upstream + request.rel_url.path_qs, headers=headers) as upstream:
            raw = await upstream.read()
            if upstream.headers.get("Content-Encoding") == "gzip":
                raw = gzip.decompress(raw)
            doc = json.loads(raw)
            return web.json_response(as_15(doc) if upstream.status == 200 else doc, status=upstream.status)


@pytest.fixture
def old_kuberay(kube: Kube) -> Iterator[Kube]:
    """``kube`` seen through :class:`OldCrdProxy`: a KubeRay 1.5.x install, to the hub."""
    proxy = OldCrdProxy(kube.cluster.server, ssl_context(kube.cluster.pki.ca.cert)).start()
    try:
        yield dataclasses.replace(kube, proxy=proxy)
    finally:
        proxy.stop()


def _documented_cluster_role() -> dict:
    """The ClusterRole docs/security.md tells admins to add, taken from the page itself."""
    text = SECURITY_DOC.read_text()
    block = text.split("## KubeRay version", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    role = yaml.safe_load(block)
    assert role["kind"] == "ClusterRole", role
    return role


@pytest.fixture
def grant_crd_read(kube: Kube) -> Iterator[Any]:
    """``grant()``: the documented ClusterRole, bound to ``kube``'s hub account (named after the
    test's namespace: cluster-wide objects, removed afterwards)."""
    made: list[str] = []

    def grant() -> None:
        role = _documented_cluster_role()
        name = f"{role['metadata']['name']}-{kube.ns}"
        role["metadata"]["name"] = name
        kube.create_object(role)
        made.append(name)
        kube.create_object(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
                "subjects": [{"kind": "ServiceAccount", "name": "hub", "namespace": kube.ns}],
            }
        )

    yield grant
    for name in made:
        kube.delete_object("clusterrolebindings", None, name)
        kube.delete_object("clusterroles", None, name)


async def test_old_kuberay_refuses_the_spawn_and_creates_nothing(old_kuberay, grant_crd_read, ray_spawner_factory):
    grant_crd_read()
    kube = old_kuberay
    sp = ray_spawner_factory(kube, ray_backend="kuberay", ray_orphan_sweep_interval=0)
    sp.user_options = dict(RAY)
    kube.reset_request_log()
    with pytest.raises(ClusterStartError) as e:
        await asyncio.wait_for(sp.start(), 30)
    message = e.value.message
    assert "KubeRay operator installed (v1.5.1) is older than 1.6.0" in message, message
    assert "Upgrade KubeRay to 1.6.0 or later" in message and "ray_backend = 'pods'" in message
    assert "Traceback" not in message and "HTTP" not in message
    assert crd_reads(kube) == [("get", "customresourcedefinitions", None, detect.CRD_NAME)]
    assert not [r for r in kube.request_log if r[0] in ("create", "patch", "update")], kube.request_log
    assert everything(kube) == []
    await sp.stop()


async def test_current_kuberay_spawns_with_its_token_secret(kube, grant_crd_read, ray_spawner_factory):
    """The installed CRD (KubeRay v1.6.2's), read by the hub, carries authOptions.secretName."""
    grant_crd_read()
    sp = ray_spawner_factory(kube, ray_backend="kuberay", ray_orphan_sweep_interval=0)
    sp.user_options = dict(RAY)
    kube.reset_request_log()
    await asyncio.wait_for(sp.start(), 30)
    assert crd_reads(kube) == [("get", "customresourcedefinitions", None, detect.CRD_NAME)]
    assert hub_process.kuberay_auth_problem == {kube.url: ""}  # read and found fine, not unreadable
    cluster = kube.get_object("rayclusters", kube.ns, "ray-alice")
    assert cluster["spec"]["authOptions"] == {"mode": "token", "secretName": "ray-alice-ray-token"}
    await sp.stop()


@pytest.mark.parametrize("wanted", ["kuberay", "auto"])
async def test_old_kuberay_is_used_when_token_auth_is_off(old_kuberay, grant_crd_read, ray_spawner_factory, wanted):
    """No authOptions to wire: KubeRay 1.5 is fine, and its CRD is not even read."""
    grant_crd_read()
    kube = old_kuberay
    sp = ray_spawner_factory(kube, ray_backend=wanted, ray_auth_enabled=False, ray_orphan_sweep_interval=0)
    sp.user_options = dict(RAY)
    kube.reset_request_log()
    await asyncio.wait_for(sp.start(), 30)
    assert sp.ray_session.backend.kind == "kuberay"
    assert crd_reads(kube) == []
    assert "authOptions" not in kube.get_object("rayclusters", kube.ns, "ray-alice")["spec"]
    await sp.stop()


@pytest.mark.parametrize("granted", [True, False])
async def test_crd_check_under_rbac(old_kuberay, grant_crd_read, ray_spawner_factory, caplog, granted):
    """With the documented ClusterRole the hub reads the CRD and refuses KubeRay 1.5; without
    it (the shipped Roles alone) the read is forbidden, logged once, and KubeRay is used."""
    if granted:
        grant_crd_read()
    kube = old_kuberay
    sp = ray_spawner_factory(kube, ray_backend="kuberay", ray_orphan_sweep_interval=0)
    sp.user_options = dict(RAY)
    if granted:
        with pytest.raises(ClusterStartError, match=r"\(v1.5.1\) is older than 1.6.0"):
            await asyncio.wait_for(sp.start(), 30)
        assert everything(kube) == []
    else:
        with caplog.at_level(logging.WARNING):
            await asyncio.wait_for(sp.start(), 30)
        assert sp.ray_session.backend.kind == "kuberay"
        warned = [r.getMessage() for r in caplog.records if "Cannot read the CRD" in r.getMessage()]
        assert len(warned) == 1 and "HTTP 403" in warned[0], warned
    assert crd_reads(kube) == [("get", "customresourcedefinitions", None, detect.CRD_NAME)]
    await sp.stop()
