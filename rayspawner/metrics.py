"""Prometheus metrics, served by the hub's own /hub/metrics (same registry)."""

from __future__ import annotations

import sys

from prometheus_client import Counter, Gauge, Histogram

RAY_CLUSTERS_RUNNING = Gauge(
    "rayspawner_clusters_running", "Ray clusters currently running (started by this hub process)", ["backend"]
)
RAY_SPAWN_DURATION = Histogram(
    "rayspawner_cluster_spawn_duration_seconds",
    "Seconds from start until the notebook and the Ray head were ready",
    ["backend"],
    buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, float("inf")),
)
RAY_TEARDOWN_DURATION = Histogram(
    "rayspawner_cluster_teardown_duration_seconds",
    "Seconds from stop until no Ray object of the server remained",
    ["backend"],
    buckets=(0.5, 1, 2, 5, 10, 30, 60, float("inf")),
)
RAY_SPAWN_FAILURES = Counter(
    "rayspawner_cluster_spawn_failures_total", "Ray cluster spawns that failed, by reason", ["backend", "reason"]
)


def spawn_succeeded(backend: str, seconds: float) -> None:
    RAY_SPAWN_DURATION.labels(backend=backend).observe(seconds)
    RAY_CLUSTERS_RUNNING.labels(backend=backend).inc()


def spawn_failed(backend: str, reason: str) -> None:
    RAY_SPAWN_FAILURES.labels(backend=backend, reason=reason).inc()


def reattached(backend: str) -> None:
    """A running cluster found in the hub's state at start-up."""
    RAY_CLUSTERS_RUNNING.labels(backend=backend).inc()


def teardown_done(backend: str, seconds: float, was_running: bool) -> None:
    RAY_TEARDOWN_DURATION.labels(backend=backend).observe(seconds)
    if was_running:
        RAY_CLUSTERS_RUNNING.labels(backend=backend).dec()


# ---------------------------------------------------------------- what clusters hold
#: a profile slug is admin-defined; this bounds a hand-made one's label all the same
_PROFILE_LABEL_MAX = 63


def _active_spawners():
    """Every spawner of this hub process (read at each scrape from JupyterHub's users)."""
    # only where JupyterHub runs (never imported from here: a scrape holds the registry's lock)
    app = sys.modules.get("jupyterhub.app")
    if app is None or not app.JupyterHub.initialized():
        return []
    users = getattr(app.JupyterHub.instance(), "users", None) or {}
    return [s for user in list(users.values()) for s in list(getattr(user, "spawners", {}).values())]


def profile_of(spawner) -> str:
    slug = (getattr(spawner, "user_options", None) or {}).get("profile")
    return str(slug)[:_PROFILE_LABEL_MAX] if isinstance(slug, str) and slug else "default"


def held_resources(spawners) -> dict[tuple[str, str], list[int]]:
    """{(backend, profile): [clusters, cpu millis max, min, memory bytes max, min, gpu max, min]}."""
    from .quotas import backend_of, usage_of

    held: dict[tuple[str, str], list[int]] = {}
    for s in spawners:
        u = usage_of(s)
        if u is None:
            continue
        row = held.setdefault((backend_of(s), profile_of(s)), [0] * 7)
        for i, v in enumerate(
            (1, u.cpu_millis, u.cpu_millis_min, u.memory_bytes, u.memory_bytes_min, u.gpu, u.gpu_min)
        ):
            row[i] += v
    return held


class HeldResourcesCollector:
    """Ray clusters of active servers and what they hold, by backend and profile (no user
    label: bounded cardinality). ``bound="max"``: head + workers at their maximum (what the
    per-user totals count); ``bound="min"``: at their minimum (an idle autoscaling cluster)."""

    def describe(self):
        # what register() asks for, so it does not call collect()
        return list(self._families({}))

    def collect(self):
        try:
            held = held_resources(_active_spawners())
        except Exception:  # a scrape must never fail the hub's /metrics
            held = {}
        return self._families(held)

    @staticmethod
    def _families(held):
        from prometheus_client.core import GaugeMetricFamily

        clusters = GaugeMetricFamily(
            "rayspawner_ray_clusters", "Ray clusters of active servers", labels=["backend", "profile"]
        )
        families = [
            (
                GaugeMetricFamily(
                    "rayspawner_ray_cpu",
                    "CPU held by Ray clusters of active servers",
                    labels=["backend", "profile", "bound"],
                ),
                1,
                1000,
            ),
            (
                GaugeMetricFamily(
                    "rayspawner_ray_memory_bytes",
                    "Memory held by Ray clusters of active servers",
                    labels=["backend", "profile", "bound"],
                ),
                3,
                1,
            ),
            (
                GaugeMetricFamily(
                    "rayspawner_ray_gpus",
                    "GPUs held by Ray clusters of active servers",
                    labels=["backend", "profile", "bound"],
                ),
                5,
                1,
            ),
        ]
        for (backend, profile), row in sorted(held.items()):
            clusters.add_metric([backend, profile], row[0])
            for family, i, scale in families:
                family.add_metric([backend, profile, "max"], row[i] / scale)
                family.add_metric([backend, profile, "min"], row[i + 1] / scale)
        yield clusters
        for family, _, _ in families:
            yield family


def _register() -> None:
    from prometheus_client import REGISTRY

    try:
        REGISTRY.register(HeldResourcesCollector())
    except ValueError:  # already registered (module reloaded)
        pass


_register()
