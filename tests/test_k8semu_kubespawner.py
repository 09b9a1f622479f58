"""Acceptance: an unmodified kubespawner.KubeSpawner start -> running -> stop cycle against k8semu."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kubernetes_asyncio.config import kube_config
from kubespawner import KubeSpawner
from kubespawner.clients import load_config

from tests.k8semu import K8sEmu


@pytest.fixture
async def spawner_factory(k8s_emu: K8sEmu, monkeypatch: pytest.MonkeyPatch):
    # kubespawner's load_config (lru_cached per host) loads the default kubeconfig, whose path
    # kubernetes_asyncio read from $KUBECONFIG at import; then it overrides the host.
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(k8s_emu.kubeconfig_path))
    load_config.cache_clear()  # lru_cached per host: a reused port must still reconfigure the client
    made: list[KubeSpawner] = []

    def make(**kw: Any) -> KubeSpawner:
        opts: dict[str, Any] = dict(
            k8s_api_host=k8s_emu.url,
            namespace="jhub",
            start_timeout=20,
            http_timeout=5,
            image="quay.io/jupyterhub/k8s-singleuser-sample:4.0.0",
            api_token="test-token",
            oauth_client_id="unused",
        )
        opts.update(kw)
        sp = KubeSpawner(_mock=True, **opts)
        made.append(sp)
        return sp

    yield make
    # reflectors are shared class-wide and bound to this test's event loop: stop them
    for key, refl in list(KubeSpawner.reflectors.items()):
        await refl.stop()
        KubeSpawner.reflectors.pop(key, None)


async def test_kubespawner_start_running_stop(k8s_emu: K8sEmu, spawner_factory) -> None:
    spawner = spawner_factory()
    assert await spawner.poll() == 1 or await spawner.poll() is not None  # nothing running yet

    start_future = spawner.start()
    progress: list[dict[str, Any]] = []

    async def collect() -> None:
        async for ev in spawner.progress():
            progress.append(ev)

    collector = asyncio.ensure_future(collect())
    url = await asyncio.wait_for(start_future, 20)
    await asyncio.wait_for(collector, 10)

    pod = k8s_emu.get_object("pods", "jhub", spawner.pod_name)
    assert pod is not None and pod["status"]["phase"] == "Running"
    assert url == f"http://{pod['status']['podIP']}:8888"
    assert pod["status"]["podIP"].startswith("127.244.")
    assert await spawner.poll() is None

    reasons = [ev["raw_event"]["reason"] for ev in progress if "raw_event" in ev]
    for reason in ("Scheduled", "Pulling", "Pulled", "Created", "Started"):
        assert reason in reasons, progress
    assert any("Successfully assigned jhub/" in ev["message"] for ev in progress)

    # the pod and event reflectors used list + watch
    verbs = {(v, r) for v, r, _, _ in k8s_emu.request_log}
    assert {("list", "pods"), ("watch", "pods"), ("list", "events"), ("watch", "events"), ("create", "pods")} <= verbs
    assert k8s_emu.open_watches.current >= 2

    await asyncio.wait_for(spawner.stop(), 20)
    assert k8s_emu.get_object("pods", "jhub", spawner.pod_name) is None
    assert await spawner.poll() is not None
    assert ("delete", "pods", "jhub", spawner.pod_name) in k8s_emu.request_log


async def test_kubespawner_start_fails_on_image_pull(k8s_emu: K8sEmu, spawner_factory) -> None:
    spawner = spawner_factory(extra_annotations={"k8semu/image-pull": "fail"}, start_timeout=2)
    with pytest.raises(Exception):  # noqa: B017 - KubeSpawner's own error type for this varies by version
        await asyncio.wait_for(spawner.start(), 10)
    events = k8s_emu.list_objects("events", "jhub")
    assert any(e["reason"] == "Failed" and "ErrImagePull" in e["message"] for e in events)
    await spawner.stop(now=True)
