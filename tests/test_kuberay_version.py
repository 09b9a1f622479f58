"""KubeRay must be >= 1.6.0 for token auth: older CRDs prune spec.authOptions.secretName and the
operator injects its own token, so nodes and notebook would disagree. The RayCluster CRD's schema
says which (the real v1.7.0 CRD, and the same with the field removed as in 1.5.x); where the CRD
cannot be read (no ClusterRole, or an API server without CRDs such as k8semu) that is logged
once and KubeRay is used."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import pytest
import yaml

from rayspawner.backends import detect
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
    detect._auth_problem[host] = detect.token_auth_problem(as_15(crd_17))  # what reading a 1.5.1 CRD gives
    with pytest.raises(ClusterStartError, match="older than 1.6.0") as e:
        await detect.select_backend("kuberay", sp.log)
    assert e.value.reason_label == "kuberay_too_old"
    detect._auth_problem[host] = detect.token_auth_problem(as_15(crd_17))
    with caplog.at_level(logging.WARNING):
        assert await detect.select_backend("auto", sp.log) == "pods"
    assert any("Using plain pods, not KubeRay" in r.getMessage() for r in caplog.records)
