"""Fixtures that build real RaySpawner objects talking HTTP to an API server.

``ray_spawner(kube, user="alice", server="", **traits)`` returns a RaySpawner
(KubeSpawner's ``_mock`` hub, a stand-in user) whose Kubernetes client points at
``kube``: the real test cluster's fault proxy (``testcluster.fixtures.Kube``: its own
namespace, the hub's ServiceAccount token) or, for tests not yet moved, the loopback
emulator. Reflectors are class-wide and bound to the test's event loop, so
they are stopped after each test.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes_asyncio.config import kube_config
from kubespawner.clients import load_config

from rayspawner.registry import hub_process
from rayspawner.backends import detect

NOTEBOOK_IMAGE = "quay.io/rayspawner/notebook:2.60.0"

RAY_PROFILE = {
    "display_name": "Ray",
    "slug": "ray",
    "kubespawner_override": {"ray_enabled": True},
    "profile_options": {
        "workers": {
            "display_name": "Workers",
            "choices": {
                "1": {"display_name": "1", "kubespawner_override": {"ray_worker_replicas": 1}},
                "2": {"display_name": "2", "kubespawner_override": {"ray_worker_replicas": 2}},
            },
            "unlisted_choice": {"enabled": True, "kubespawner_override": {"ray_worker_replicas": "{value}"}},
        }
    },
}
PROFILES = [{"display_name": "Plain", "slug": "plain", "default": True}, RAY_PROFILE]


#: what an admin sets where namespaces enforce the restricted Pod Security Standard
#: (as jupyterhub_config/kubernetes.py does); the Ray pods carry the same on their own
RESTRICTED_TRAITS: dict[str, Any] = {
    "uid": 1000,
    "pod_security_context": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
    "container_security_context": {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    },
}


def user(name: str, uid: int = 1) -> SimpleNamespace:
    return SimpleNamespace(name=name, id=uid, url=f"/user/{name}/", escaped_name=name)


@pytest.fixture
async def ray_spawner_factory(monkeypatch: pytest.MonkeyPatch):
    from rayspawner import RaySpawner

    detect.forget()
    made: list[Any] = []

    def make(emu: Any, username: str = "alice", server: str = "", **traits: Any) -> Any:
        monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(emu.kubeconfig_path))
        # kubespawner's load_config is lru_cached per host and sets a process-global default
        # Configuration: an emulator that reuses an earlier (stopped) one's port would otherwise
        # leave the global host pointing at whichever emulator configured it last
        load_config.cache_clear()
        opts: dict[str, Any] = dict(
            k8s_api_host=emu.url,
            namespace=getattr(emu, "ns", "jhub"),
            start_timeout=30,
            http_timeout=5,
            image=NOTEBOOK_IMAGE,
            api_token="test-token",
            oauth_client_id="unused",
            profile_list=PROFILES,
            ray_stop_timeout=10,
            k8s_api_request_retry_timeout=10,
        )
        if hasattr(emu, "ns"):  # the real test cluster: restricted Pod Security, KubeRay installed
            opts.update(RESTRICTED_TRAITS, ray_backend="pods")
        opts.update(traits)
        orm = SimpleNamespace(name=server, server=None, user_options={}, state=None)
        sp = RaySpawner(_mock=True, user=user(username, len(made) + 1), orm_spawner=orm, **opts)
        made.append(sp)
        return sp

    yield make
    hub_process.reset()  # as a new hub process: no sweeps, no local backends
    for key, refl in list(RaySpawner.reflectors.items()):
        await refl.stop()
        RaySpawner.reflectors.pop(key, None)
    detect.forget()


def ray_objects(emu: Any, cluster: str | None = None, namespace: str | None = None) -> list[tuple[str, str]]:
    """Every object labelled as managed by rayspawner (optionally one cluster's) in the test's namespace."""
    namespace = namespace or getattr(emu, "ns", "jhub")
    selector = "app.kubernetes.io/managed-by=rayspawner"
    if cluster:
        selector += f",ray.io/cluster={cluster}"
    found = []
    for resource in ("pods", "services", "secrets", "deployments", "replicasets", "networkpolicies", "configmaps"):
        for obj in emu.list_objects(resource, namespace, label_selector=selector):
            found.append((resource, obj["metadata"]["name"]))
    if getattr(emu, "kuberay", False):
        for obj in emu.list_objects("rayclusters", namespace, label_selector=selector):
            found.append(("rayclusters", obj["metadata"]["name"]))
    return sorted(found)


RAY = {"profile": "ray", "workers": "2"}


async def wait_until(predicate, timeout: float = 15.0, interval: float = 0.05):
    """Poll ``predicate`` until it returns something truthy (returned), or fail the test."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


async def start(sp: Any, options: dict = RAY, timeout: float = 30) -> str:
    sp.user_options = dict(options)
    return await asyncio.wait_for(sp.start(), timeout)


def env_of(pod: dict) -> dict:
    """The first container's env of a pod, by name."""
    return {e["name"]: e for e in pod["spec"]["containers"][0].get("env", [])}
