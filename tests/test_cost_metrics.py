"""Visible use: what Ray clusters hold, as Prometheus gauges by backend and profile (no
user label), and the cluster's size in the spawn's closing message. Through a real hub:
tests/test_cost_quotas_hub.py reads /hub/metrics while a local cluster runs."""

from __future__ import annotations

import logging
from prometheus_client import CollectorRegistry, generate_latest

from rayspawner.session import RayClusterSession
from rayspawner import metrics, progress_steps, quotas
from rayspawner.backends.base import ClusterStatus
from rayspawner.config import RayConfig
from rayspawner.options import resolve_spec
from rayspawner.spec import ClusterRef


class S:
    def __init__(self, user: str, profile: str | None, active: bool = True, backend: str = "kuberay", **traits):
        cfg = RayConfig(ray_head_memory="1Gi", ray_worker_memory="1Gi", **traits)
        self.ray_session = RayClusterSession(logging.getLogger(__name__), lambda: user, None)
        self.ray_session.spec = resolve_spec(cfg, username=user, servername="", namespace="n", notebook_image="i")
        self.ray_session.ref = ClusterRef(self.ray_session.spec.name, "n", backend)
        self.user_options = {"profile": profile} if profile else {}
        self.active, self.name = active, ""


def scrape(spawners, monkeypatch) -> str:
    monkeypatch.setattr(metrics, "_active_spawners", lambda: spawners)
    registry = CollectorRegistry()
    registry.register(metrics.HeldResourcesCollector())
    return generate_latest(registry).decode()


def test_held_resources_by_backend_and_profile_without_users(monkeypatch) -> None:
    spawners = [
        S("alice", "ray", ray_worker_replicas=2),  # 3 CPU, 3Gi
        S("bob", "ray", ray_worker_replicas=1),  # 2 CPU, 2Gi
        S("carol", "ray-auto", ray_worker_replicas=0, ray_worker_max_replicas=4),  # 1-5 CPU
        S("dave", None, backend="pods"),
        S("erin", "ray", active=False),  # stopped: holds nothing
    ]
    text = scrape(spawners, monkeypatch)
    assert 'rayspawner_ray_clusters{backend="kuberay",profile="ray"} 2.0' in text
    assert 'rayspawner_ray_cpu{backend="kuberay",bound="max",profile="ray"} 5.0' in text
    assert 'rayspawner_ray_memory_bytes{backend="kuberay",bound="max",profile="ray"} 5.36870912e+09' in text
    assert 'rayspawner_ray_cpu{backend="kuberay",bound="min",profile="ray-auto"} 1.0' in text
    assert 'rayspawner_ray_cpu{backend="kuberay",bound="max",profile="ray-auto"} 5.0' in text
    assert 'rayspawner_ray_clusters{backend="pods",profile="default"} 1.0' in text
    assert 'rayspawner_ray_gpus{backend="kuberay",bound="max",profile="ray"} 0.0' in text
    for user in ("alice", "bob", "carol", "dave", "erin"):
        assert user not in text


def test_a_broken_spawner_never_fails_the_scrape(monkeypatch) -> None:
    class Broken:
        @property
        def active(self):
            raise RuntimeError("boom")

    text = scrape([Broken()], monkeypatch)
    assert "# TYPE rayspawner_ray_cpu gauge" in text


def test_collector_is_on_the_hub_registry_outside_a_hub() -> None:
    from prometheus_client import REGISTRY

    assert "# TYPE rayspawner_ray_clusters gauge" in generate_latest(REGISTRY).decode()


def test_final_progress_message_says_what_the_cluster_holds() -> None:
    spec = resolve_spec(
        RayConfig(ray_worker_replicas=2), username="a", servername="", namespace="n", notebook_image="i"
    )
    st = ClusterStatus(exists=True, head_ready=True, workers_ready=2, workers_desired=2)
    msg = progress_steps.ready_message(spec, st, None)
    assert msg.endswith("It holds 3 CPU, 6Gi memory (head + 2 workers).")
    auto = resolve_spec(
        RayConfig(
            ray_worker_replicas=1, ray_worker_min_replicas=0, ray_worker_max_replicas=4, ray_gpu_worker_replicas=1
        ),
        username="a",
        servername="",
        namespace="n",
        notebook_image="i",
    )
    assert quotas.size_sentence(auto, autoscaled=True) == (
        "It holds 2–6 CPU, 4Gi–12Gi memory, 1–1 GPUs (head + 1–5 workers, idle workers removed)."
    )
    # the pods backend and local mode keep the workers at their replicas: min and max mean nothing there
    assert quotas.size_sentence(auto, autoscaled=False) == "It holds 3 CPU, 6Gi memory, 1 GPU (head + 2 workers)."
    assert "(head + 2 workers)." in progress_steps.ready_message(auto, st, None, autoscaled=False)
