"""The example Kubernetes config's notebook pod (with its driver-mode Ray node sidecar and version
probe) meets the "restricted" Pod Security Standard, as judged by the real API server's PodSecurity
admission plugin (server-side dry-run into a namespace that enforces ``restricted``); without those
settings the same pod is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from traitlets.config.loader import PyFileConfigLoader

from testcluster.client import ApiError

from .spawner_fixtures import RAY

CONFIG = Path(__file__).resolve().parents[1] / "jupyterhub_config" / "kubernetes.py"


async def _manifest(sp) -> dict:
    from kubernetes_asyncio.client import ApiClient

    sp.user_options = dict(RAY)
    await sp.load_user_options()
    async with ApiClient() as api:
        return api.sanitize_for_serialization(await sp.get_pod_manifest())


def _dry_run(kube, pod: dict) -> dict:
    return kube.call("POST", f"/api/v1/namespaces/{kube.ns}/pods?dryRun=All", pod)


async def test_example_notebook_pod_is_admitted_as_restricted(kube, ray_spawner_factory):
    cfg = PyFileConfigLoader(CONFIG.name, str(CONFIG.parent)).load_config()
    traits = {k: cfg.RaySpawner[k] for k in ("pod_security_context", "container_security_context")}
    # + the version probe (an init container) for another Ray image
    sp = ray_spawner_factory(kube, ray_image="quay.io/rayspawner/ray:2.60.0", **traits)
    pod = await _manifest(sp)
    names = [c["name"] for c in pod["spec"].get("initContainers") or []]
    assert len(names) >= 2, names  # the Ray node sidecar and the version probe are checked too
    admitted = _dry_run(kube, pod)
    assert admitted["metadata"]["name"] == sp.pod_name
    assert kube.get_object("pods", kube.ns, sp.pod_name) is None  # a dry run creates nothing


async def test_without_the_settings_the_notebook_pod_is_refused(kube, ray_spawner_factory):
    bare = ray_spawner_factory(kube, "bob", pod_security_context={}, container_security_context={}, uid=None)
    with pytest.raises(ApiError) as e:
        _dry_run(kube, await _manifest(bare))
    assert e.value.code == 403
    assert 'violates PodSecurity "restricted:latest"' in str(e.value)
