"""Per-user totals through a real JupyterHub (LocalRaySpawner, named servers).

One hub, restarted once in the middle (``cleanup_servers = False``: servers outlive the
hub, as in production), and one real Ray cluster (a 1-CPU head): every other spawn here is
refused, which boots nothing.
"""

from __future__ import annotations

import secrets
import shutil
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from rayspawner.backends.local import MARKER_ROOT, find_processes

from .hubproc import HubProcess

pytestmark = pytest.mark.slow

PROFILES = [
    {
        "display_name": "Ray (1 CPU)",
        "slug": "ray",
        "default": True,
        "kubespawner_override": {"ray_enabled": True, "ray_worker_replicas": 0, "ray_head_memory": "1Gi"},
    },
    {
        "display_name": "Ray (3 CPU)",
        "slug": "ray-big",
        "kubespawner_override": {
            "ray_enabled": True,
            "ray_worker_replicas": 2,
            "ray_head_memory": "1Gi",
            "ray_worker_memory": "1Gi",
        },
    },
]


def config(temp_root: str, home: str) -> str:
    return f"""
c.JupyterHub.spawner_class = "ray-local"
c.JupyterHub.allow_named_servers = True
c.JupyterHub.cleanup_servers = False
c.JupyterHub.load_groups = {{"no-ray": {{"users": ["carol"]}}}}
c.LocalRaySpawner.profile_list = {PROFILES!r}
c.LocalRaySpawner.local_temp_root = {temp_root!r}
c.LocalRaySpawner.home_dir_template = {home!r} + "/{{username}}"
c.LocalRaySpawner.ray_orphan_sweep_interval = 0
c.LocalRaySpawner.start_timeout = 400
c.LocalRaySpawner.http_timeout = 120
c.LocalRaySpawner.ray_user_max_clusters = 1
c.LocalRaySpawner.ray_user_max_total_cpu = "2"
c.LocalRaySpawner.ray_user_group_limits = {{"no-ray": {{"clusters": 0}}}}
"""


@pytest.fixture(scope="module")
def temp_root() -> Iterator[str]:
    root = f"/tmp/rsq{secrets.token_hex(3)}"
    yield root
    for p in find_processes(MARKER_ROOT, root):
        p.kill()
    shutil.rmtree(root, ignore_errors=True)


def ray_processes(root: str) -> list:
    return find_processes(MARKER_ROOT, root)


def spawn(hub: HubProcess, user: str, server: str, profile: str = "ray") -> tuple[int, object]:
    return hub.api("POST", f"/users/{user}/servers/{server}", {"profile": profile})


def message(body: object) -> str:
    return body.get("message", "") if isinstance(body, dict) else str(body)


def held(hub: HubProcess) -> dict[str, float]:
    """rayspawner_ray_* samples of /hub/metrics, by their full line key."""
    r = requests.get(hub.url + "/hub/metrics", headers={"Authorization": f"token {hub.token}"}, timeout=30)
    assert r.status_code == 200
    lines = [ln for ln in r.text.splitlines() if ln.startswith("rayspawner_ray_")]
    assert not any("alice" in ln or "carol" in ln for ln in lines), lines  # no per-user label
    return {k: float(v) for k, v in (ln.rsplit(" ", 1) for ln in lines)}


def wait_ready(hub: HubProcess, user: str, server: str, timeout: float = 420) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, info = hub.api("GET", f"/users/{user}")
        s = info["servers"].get(server)
        if s and s["ready"]:
            return
        if not s:
            raise AssertionError(f"{user}/{server} went away:\n{hub.log()[-4000:]}")
        time.sleep(1)
    raise AssertionError(f"{user}/{server} not ready in {timeout}s:\n{hub.log()[-4000:]}")


def test_totals_across_named_servers_concurrent_spawns_and_a_hub_restart(temp_root: str, tmp_path) -> None:
    hub = HubProcess(config(temp_root, str(tmp_path / "home")), workdir=str(tmp_path)).start()
    try:
        for user in ("alice", "carol"):
            hub.api("POST", f"/users/{user}")

        # a group lowers the limit: carol (group no-ray) may hold no cluster at all
        status, body = spawn(hub, "carol", "x")
        assert status == 400, (status, body)
        assert "over your limit of 0 Ray clusters (group 'no-ray'" in message(body), body
        assert ray_processes(temp_root) == []

        # two named servers at the same moment: exactly one gets the single slot
        results: dict[str, tuple[int, object]] = {}
        barrier = threading.Barrier(2)

        def go(name: str) -> None:
            barrier.wait()
            results[name] = spawn(hub, "alice", name)

        threads = [threading.Thread(target=go, args=(n,)) for n in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        codes = sorted(code for code, _ in results.values())
        assert codes[0] in (201, 202) and codes[1] == 400, results
        won = next(n for n, (code, _) in results.items() if code != 400)
        lost = "b" if won == "a" else "a"
        text = message(results[lost][1])
        assert "2 Ray clusters with this one, over your limit of 1 Ray cluster (ray_user_max_clusters" in text, text
        assert f"server '{won}' (cluster ray-alice--{won}: 1 CPU, 1Gi memory, 0 GPU)" in text, text
        wait_ready(hub, "alice", won)
        _, info = hub.api("GET", "/users/alice")
        assert set(info["servers"]) == {won}
        # what clusters hold, by backend and profile (the default profile's slug is "ray")
        metrics = held(hub)
        assert metrics['rayspawner_ray_clusters{backend="local",profile="ray"}'] == 1, metrics
        assert metrics['rayspawner_ray_cpu{backend="local",bound="max",profile="ray"}'] == 1, metrics
        assert metrics['rayspawner_ray_memory_bytes{backend="local",bound="max",profile="ray"}'] == 2**30

        # the hub restarts; servers (and clusters) live on, and their size comes from stored state
        hub.stop()
        hub = HubProcess(config(temp_root, str(tmp_path / "home")), workdir=str(tmp_path)).start()
        _, info = hub.api("GET", "/users/alice")
        assert info["servers"][won]["ready"], info
        assert held(hub)['rayspawner_ray_cpu{backend="local",bound="min",profile="ray"}'] == 1  # from stored state
        pids = ray_processes(temp_root)
        assert pids, "the cluster did not outlive the hub"
        status, body = spawn(hub, "alice", "c")
        assert status == 400, (status, body)
        assert f"server '{won}' (cluster ray-alice--{won}: 1 CPU, 1Gi memory, 0 GPU)" in message(body), body

        # stopped: it no longer counts (the CPU total still refuses a 3-CPU cluster; nothing boots)
        assert hub.api("DELETE", f"/users/alice/servers/{won}")[0] in (202, 204)
        deadline = time.monotonic() + 120
        while hub.api("GET", "/users/alice")[1]["servers"] and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not any(v for v in held(hub).values())
        status, body = spawn(hub, "alice", "c", profile="ray-big")
        assert status == 400, (status, body)
        text = message(body)
        assert "3 CPU with this one, over your limit of 2 CPU (ray_user_max_total_cpu; 0 CPU in use)" in text, text
        assert "Ray clusters with this one" not in text and "In use now: nothing" in text, text
        deadline = time.monotonic() + 60
        while ray_processes(temp_root) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert ray_processes(temp_root) == []
    finally:
        hub.api("DELETE", "/users/alice/servers/a")
        hub.api("DELETE", "/users/alice/servers/b")
        hub.stop()
