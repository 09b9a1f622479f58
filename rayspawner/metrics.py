"""Prometheus metrics, served by the hub's own /hub/metrics (same registry)."""

from __future__ import annotations

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
