"""KubeRay must be >= 1.6.0 for token auth: older CRDs prune spec.authOptions.secretName and the
operator injects its own token, so nodes and notebook would disagree. The RayCluster CRD's schema
says which (the real v1.7.0 CRD, and the same with the field removed as in 1.5.x); where the CRD
cannot be read (no ClusterRole, or an API server without CRDs such as k8semu) that is logged
once and KubeRay is used."""

from __future__ import annotations

import asyncio
import copy
import logging
from pathlib import Path

import pytest
import yaml

from rayspawner.backends import detect
from rayspawner.registry import hub_process
from rayspawner.errors import ClusterStartError

CRD = Path("/work/shared/schemas/kuberay-v1.7.0-rayclusters.crd.yaml")
if not CRD.is_file():
    CRD = Path(__file__).resolve().parents[2] / "shared" / "schemas" / CRD.name


@pytest.fixture(scope="module")
def crd_17() -> dict:
    if not CRD.is_file():
        pytest.skip(f"{CRD} not available")
    return yaml.safe_load(CRD.read_text())


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


async def test_unreadable_crd_is_logged_once_and_kuberay_used(k8s_emu_kuberay, ray_spawner_factory, caplog):
    ray_spawner_factory(k8s_emu_kuberay)  # points the shared client at the emulator (which serves no CRDs)
    log = logging.getLogger("test.kuberay.version")
    with caplog.at_level(logging.WARNING, logger="test.kuberay.version"):
        assert await detect.select_backend("kuberay", log) == "kuberay"
        assert await detect.select_backend("auto", log) == "kuberay"
    lines = [r.getMessage() for r in caplog.records if "customresourcedefinitions" in r.getMessage()]
    assert len(lines) == 1 and "HTTP 404" in lines[0], lines


async def test_old_kuberay_is_refused_or_skipped(k8s_emu_kuberay, ray_spawner_factory, crd_17, caplog):
    sp = ray_spawner_factory(k8s_emu_kuberay)
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


# ---- end to end: RaySpawner against k8semu serving the CRD (tests/k8semu/crds.py) ----
RAY = {"profile": "ray", "workers": "1"}
HUB = "system:serviceaccount:jhub:hub"
RBAC_DIR = Path(__file__).resolve().parents[1] / "jupyterhub_config" / "rbac"
SECURITY_DOC = Path(__file__).resolve().parents[1] / "docs" / "security.md"


def crd_reads(emu) -> list[tuple]:
    return [r for r in emu.request_log if r[1] == "customresourcedefinitions"]


def everything(emu) -> list[tuple[str, str]]:
    """Every object a spawn could have made (labelled or not) in the hub's namespace."""
    found = []
    for resource in ("pods", "services", "secrets", "deployments", "networkpolicies", "rayclusters"):
        found += [(resource, o["metadata"]["name"]) for o in emu.list_objects(resource, "jhub")]
    return sorted(found)


async def test_k8semu_serves_the_crd_read_only(k8s_emu_factory, crd_17):
    from kubernetes_asyncio import client, config

    emu = k8s_emu_factory(kuberay=True, crds=[crd_17])
    cfg = client.Configuration()
    await config.load_kube_config(config_file=str(emu.kubeconfig_path), client_configuration=cfg)
    async with client.ApiClient(cfg) as api:
        ext = client.ApiextensionsV1Api(api)
        got = await ext.read_custom_resource_definition(detect.CRD_NAME, _preload_content=False)
        body = await got.json()
        assert body["spec"]["names"]["kind"] == "RayCluster" and body["metadata"]["uid"]
        assert body["spec"]["versions"] == crd_17["spec"]["versions"]
        listed = await ext.list_custom_resource_definition(_preload_content=False)
        assert [i["metadata"]["name"] for i in (await listed.json())["items"]] == [detect.CRD_NAME]
        with pytest.raises(client.ApiException) as e:
            await ext.read_custom_resource_definition("nothere.ray.io")
        assert e.value.status == 404
        with pytest.raises(client.ApiException) as e:
            await ext.delete_custom_resource_definition(detect.CRD_NAME)
        assert e.value.status == 405 and "read-only" in e.value.body
    assert emu.get_object("customresourcedefinitions", None, detect.CRD_NAME) is not None
    with pytest.raises(ValueError, match="not an apiextensions.k8s.io/v1 CustomResourceDefinition"):
        k8s_emu_factory(crds=[{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}])


async def test_old_kuberay_refuses_the_spawn_and_creates_nothing(k8s_emu_factory, ray_spawner_factory, crd_17):
    emu = k8s_emu_factory(kuberay=True, crds=[as_15(crd_17)])
    sp = ray_spawner_factory(emu, ray_backend="kuberay", ray_orphan_sweep_interval=0)
    sp.user_options = dict(RAY)
    emu.reset_request_log()
    with pytest.raises(ClusterStartError) as e:
        await asyncio.wait_for(sp.start(), 30)
    message = e.value.message
    assert "KubeRay operator installed (v1.5.1) is older than 1.6.0" in message, message
    assert "Upgrade KubeRay to 1.6.0 or later" in message and "ray_backend = 'pods'" in message
    assert "Traceback" not in message and "HTTP" not in message
    assert crd_reads(emu) == [("get", "customresourcedefinitions", None, detect.CRD_NAME)]
    assert not [r for r in emu.request_log if r[0] in ("create", "patch", "update")], emu.request_log
    assert everything(emu) == []
    await sp.stop()


async def test_current_kuberay_spawns_with_its_token_secret(k8s_emu_factory, ray_spawner_factory, crd_17):
    emu = k8s_emu_factory(kuberay=True, crds=[crd_17])
    sp = ray_spawner_factory(emu, ray_backend="kuberay", ray_orphan_sweep_interval=0)
    sp.user_options = dict(RAY)
    emu.reset_request_log()
    await asyncio.wait_for(sp.start(), 30)
    assert crd_reads(emu) == [("get", "customresourcedefinitions", None, detect.CRD_NAME)]
    cluster = emu.get_object("rayclusters", "jhub", "ray-alice")
    assert cluster["spec"]["authOptions"] == {"mode": "token", "secretName": "ray-alice-ray-token"}
    await sp.stop()


@pytest.mark.parametrize("wanted", ["kuberay", "auto"])
async def test_old_kuberay_is_used_when_token_auth_is_off(k8s_emu_factory, ray_spawner_factory, crd_17, wanted):
    """No authOptions to wire: KubeRay 1.5 is fine, and its CRD is not even read."""
    emu = k8s_emu_factory(kuberay=True, crds=[as_15(crd_17)])
    sp = ray_spawner_factory(emu, ray_backend=wanted, ray_auth_enabled=False, ray_orphan_sweep_interval=0)
    sp.user_options = dict(RAY)
    emu.reset_request_log()
    await asyncio.wait_for(sp.start(), 30)
    assert sp.ray_session.backend.kind == "kuberay"
    assert crd_reads(emu) == []
    assert "authOptions" not in emu.get_object("rayclusters", "jhub", "ray-alice")["spec"]
    await sp.stop()


def _documented_cluster_role() -> dict:
    """The ClusterRole docs/security.md tells admins to add, taken from the page itself."""
    text = SECURITY_DOC.read_text()
    block = text.split("## KubeRay version", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    role = yaml.safe_load(block)
    assert role["kind"] == "ClusterRole", role
    return role


@pytest.mark.parametrize("granted", [True, False])
async def test_crd_check_under_rbac(k8s_emu_factory, ray_spawner_factory, crd_17, tmp_path, caplog, granted):
    """With the documented ClusterRole the hub reads the CRD and refuses KubeRay 1.5; without
    it (the shipped Roles alone) the read is forbidden, logged once, and KubeRay is used."""
    from kubespawner.clients import load_config

    docs = []
    for name in ("role-pods.yaml", "role-kuberay.yaml"):
        for d in yaml.safe_load_all((RBAC_DIR / name).read_text()):
            if d:
                d.setdefault("metadata", {}).setdefault("namespace", "jhub")
                docs.append(d)
    if granted:
        role = _documented_cluster_role()
        docs += [
            role,
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": role["metadata"]["name"]},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": role["metadata"]["name"],
                },
                "subjects": [{"kind": "ServiceAccount", "name": "hub", "namespace": "jhub"}],
            },
        ]
    path = tmp_path / "rbac.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    emu = k8s_emu_factory(kuberay=True, crds=[as_15(crd_17)], rbac_files=[path], tokens={"hub-token": HUB})
    load_config.cache_clear()

    class AsHub:
        url, kubeconfig_path, kuberay = emu.url, emu.kubeconfig_for("hub-token"), True

    sp = ray_spawner_factory(AsHub(), ray_backend="kuberay", ray_orphan_sweep_interval=0)
    sp.user_options = dict(RAY)
    if granted:
        with pytest.raises(ClusterStartError, match=r"\(v1.5.1\) is older than 1.6.0"):
            await asyncio.wait_for(sp.start(), 30)
        assert everything(emu) == []
    else:
        with caplog.at_level(logging.WARNING):
            await asyncio.wait_for(sp.start(), 30)
        assert sp.ray_session.backend.kind == "kuberay"
        warned = [r.getMessage() for r in caplog.records if "Cannot read the CRD" in r.getMessage()]
        assert len(warned) == 1 and "HTTP 403" in warned[0], warned
    await sp.stop()
    load_config.cache_clear()
