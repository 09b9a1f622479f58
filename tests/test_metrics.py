"""A real JupyterHub process with rayspawner reports Ray cluster metrics at /hub/metrics.

The hub runs RaySpawner against the real test cluster (its own namespace and hub
account, the sim node, pods backend). Its notebook pods get simulated IPs that answer
no HTTP, so after the Ray cluster is ready JupyterHub gives up waiting for the notebook (http_timeout)
and stops the server: one cluster spawn and one teardown, as a hub sees them.
A second profile whose Ray image cannot be pulled gives a spawn failure.
(Local mode, LocalRaySpawner, reports into the same metrics; it is not used here.)
"""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Iterator

import pytest

from testcluster.fixtures import Kube

from .hubproc import HubProcess
from .spawner_fixtures import RESTRICTED_TRAITS, ray_objects

pytestmark = pytest.mark.slow

NAMES = (
    "rayspawner_clusters_running",
    "rayspawner_cluster_spawn_duration_seconds",
    "rayspawner_cluster_teardown_duration_seconds",
    "rayspawner_cluster_spawn_failures_total",
)
PROFILES = [
    {"display_name": "Plain", "slug": "plain", "default": True},
    {"display_name": "Ray", "slug": "ray", "kubespawner_override": {"ray_enabled": True, "ray_worker_replicas": 1}},
    {
        "display_name": "Ray (broken image)",
        "slug": "ray-broken",
        "kubespawner_override": {
            "ray_enabled": True,
            "ray_worker_replicas": 1,
            "ray_extra_annotations": {"testcluster.rayspawner.test/image-pull": "fail"},
        },
    },
]


@pytest.fixture(scope="module")
def hub(kube_module: Kube) -> Iterator[HubProcess]:
    # the namespace enforces the restricted Pod Security Standard: the notebook pod must comply
    restricted = "\n".join(f"c.KubeSpawner.{k} = {v!r}" for k, v in RESTRICTED_TRAITS.items())
    config = f"""
c.JupyterHub.spawner_class = "ray"
c.KubeSpawner.namespace = "{kube_module.ns}"
c.KubeSpawner.k8s_api_host = "{kube_module.url}"
c.KubeSpawner.image = "quay.io/rayspawner/notebook:2.60.0"
c.KubeSpawner.profile_list = {PROFILES!r}
c.KubeSpawner.start_timeout = 20
c.KubeSpawner.http_timeout = 3
c.RaySpawner.ray_orphan_sweep_interval = 0
c.RaySpawner.ray_stop_timeout = 10
c.RaySpawner.ray_backend = "pods"
{restricted}
"""
    h = HubProcess(config, env={"KUBECONFIG": str(kube_module.kubeconfig_path)}).start()
    for name in ("alice", "bob"):
        h.api("POST", f"/users/{name}")
    yield h
    h.stop()


def metrics(hub: HubProcess, auth: bool = True) -> tuple[int, str]:
    req = urllib.request.Request(
        hub.url + "/hub/metrics", headers={"Authorization": f"token {hub.token}"} if auth else {}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample (0 if absent)."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        m = re.match(r"^([a-zA-Z_:][\w:]*)(\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(3) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(m.group(4))
    return 0.0


def wait_for_metric(hub: HubProcess, predicate, timeout: float = 60) -> str:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        _, text = metrics(hub)
        if predicate(text):
            return text
        time.sleep(0.3)
    raise AssertionError(
        f"metrics did not move in {timeout}s:\n"
        + "\n".join(line for line in text.splitlines() if line.startswith("rayspawner"))
        + "\n"
        + hub.log()[-3000:]
    )


def wait_server_gone(hub: HubProcess, user: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, info = hub.api("GET", f"/users/{user}")
        if not info["servers"] and not info.get("pending"):
            return
        time.sleep(0.3)
    raise AssertionError(f"{user}'s server still there: {info}")


def test_metrics_are_exposed_and_need_auth(hub: HubProcess) -> None:
    status, text = metrics(hub)
    assert status == 200
    for name in NAMES:
        assert f"# HELP {name} " in text and f"# TYPE {name} " in text, name
    status, _ = metrics(hub, auth=False)
    assert status in (302, 403), status


def test_spawn_and_teardown_move_the_metrics(hub: HubProcess, kube_module: Kube) -> None:
    _, before = metrics(hub)
    spawns = sample(before, "rayspawner_cluster_spawn_duration_seconds_count", backend="pods")
    teardowns = sample(before, "rayspawner_cluster_teardown_duration_seconds_count", backend="pods")

    status, body = hub.api("POST", "/users/alice/server", {"profile": "ray"})
    # 500 when the (expected) notebook HTTP timeout comes within JupyterHub's slow_spawn_timeout
    assert status in (201, 202, 500), body
    if status == 500:
        assert "didn't respond" in hub.log(), hub.log()[-3000:]
    # the Ray cluster came up: one spawn observed, one cluster running
    text = wait_for_metric(
        hub, lambda t: sample(t, "rayspawner_cluster_spawn_duration_seconds_count", backend="pods") == spawns + 1
    )
    assert sample(text, "rayspawner_cluster_spawn_duration_seconds_sum", backend="pods") > 0
    # JupyterHub then cannot reach the (simulated) notebook and stops the server: the teardown is counted
    # and the running gauge goes back
    text = wait_for_metric(
        hub, lambda t: sample(t, "rayspawner_cluster_teardown_duration_seconds_count", backend="pods") == teardowns + 1
    )
    assert sample(text, "rayspawner_clusters_running", backend="pods") == 0
    wait_server_gone(hub, "alice")
    assert ray_objects(kube_module) == []
    assert "rayspawner_cluster_spawn_duration_seconds_bucket" in text


def test_failed_spawn_is_counted_by_reason(hub: HubProcess, kube_module: Kube) -> None:
    _, before = metrics(hub)
    failures = sample(before, "rayspawner_cluster_spawn_failures_total", backend="pods", reason="image")
    status, body = hub.api("POST", "/users/bob/server", {"profile": "ray-broken"})
    assert status in (201, 202, 500), body
    text = wait_for_metric(
        hub,
        lambda t: sample(t, "rayspawner_cluster_spawn_failures_total", backend="pods", reason="image") == failures + 1,
    )
    assert sample(text, "rayspawner_clusters_running", backend="pods") == 0
    wait_server_gone(hub, "bob")
    assert ray_objects(kube_module) == []
