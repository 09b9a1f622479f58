"""End to end with the real ``jupyterhub-idle-culler``: Ray work keeps a server, an idle one goes.

One local-mode hub (jupyterhub_config/local.py) with two users at once, and the culler as a
hub service (its own token and the role its README lists) with a short timeout:

- ``busy``: the ``ray`` profile with 2 workers; a kernel starts long tasks on the cluster and
  returns at once, then the kernel is idle and the browser gone (websocket closed). Only
  ``rayspawner.activity`` (Ray work counts as jupyter_server activity) can keep it: it must
  outlive the culler's timeout by a margin;
- ``idle``: the ``ray`` profile, head only (a listed choice; one node boot less); a kernel that called ``ray.init()``
  (a connected driver, which Ray's own component_activities would call ACTIVE) and then sits
  idle, on an idle cluster: the culler stops it, and every Ray process of it is gone.

The culler runs as the README's "standalone script" (a service with an API token), started
by the test once both servers are up: JupyterHub stamps a server's activity when its spawn
*starts*, so a culler already running would stop any server whose spawn took longer than
this test's few-second timeout the moment it became ready (two Ray clusters boot here in
20-120 s, depending on the machine's load).

Without the extension (``--RayActivity.enabled=False``) the busy server is culled too, and
the test fails.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import pytest
import requests

from .kernel_ws import Kernel
from .local_hub import Hub, cluster_processes, create_user, processes_left, server_processes, start_hub, start_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

TIMEOUT = 8  # the culler's idle timeout, seconds
EVERY = 1  # how often it looks
CULLER = "idle-culler"
CULLER_TOKEN = secrets.token_hex(16)

# Run after local.py. Every link of the activity chain gets a short period, so the test waits
# seconds, not the production minutes: the extension looks at the cluster every second and the
# single-user server reports its activity to the hub every second (300 s by default).
EXTRA_CONFIG = f"""
c.JupyterHub.services.append({{"name": {CULLER!r}, "api_token": {CULLER_TOKEN!r}}})
# the scopes the culler's README lists (no admin)
c.JupyterHub.load_roles.append({{
    "name": {CULLER!r},
    "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
    "services": [{CULLER!r}],
}})
c.LocalRaySpawner.args = ["--RayActivity.interval=1"]
c.LocalRaySpawner.environment = {{"JUPYTERHUB_ACTIVITY_INTERVAL": "1"}}
"""

# the tasks take the cluster's three CPUs (head + 2 workers); the cell returns at once
BUSY = """
import time, ray
ray.init()
@ray.remote(num_cpus=1)
def work(seconds):
    time.sleep(seconds)
    return seconds
refs = [work.remote(600) for _ in range(3)]
print("NODES", len([n for n in ray.nodes() if n["Alive"]]))
"""
IDLE = "import ray\nray.init()\nprint('NODES', len([n for n in ray.nodes() if n['Alive']]))\n"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    h = start_hub(tmp_path_factory.mktemp("culler-hub"), extra_config=EXTRA_CONFIG)
    try:
        yield h
    finally:
        # a stop still in flight (a culled server) is abandoned when the hub shuts down
        # (JupyterHub's cleanup skips servers pending "stop"): let it finish first
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and h.proc.poll() is None:
            users = h.api("GET", "/users").json()
            if not any(s.get("pending") == "stop" for u in users for s in u.get("servers", {}).values()):
                break
            time.sleep(0.5)
        left = h.stop()
        assert not left, f"Ray processes left after the hub stopped: {left}"


@pytest.fixture
def start_culler(hub: Hub) -> Iterator:
    """Starts ``python -m jupyterhub_idle_culler`` against the hub (its log: culler.log)."""
    procs: list[subprocess.Popen] = []
    log = hub.log.with_name("culler.log")

    def start() -> Path:
        env = {**os.environ, "JUPYTERHUB_API_TOKEN": CULLER_TOKEN, "JUPYTERHUB_API_URL": f"{hub.url}/hub/api"}
        args = [sys.executable, "-m", "jupyterhub_idle_culler", f"--timeout={TIMEOUT}", f"--cull-every={EVERY}"]
        with open(log, "ab") as out:
            procs.append(subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT))
        return log

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _last_activity(hub: Hub, name: str) -> datetime | None:
    """The server's last activity as the hub (and so the culler) sees it; None: no server, or
    one being stopped (a culled server stays listed, pending "stop", while its cluster goes)."""
    server = hub.api("GET", f"/users/{name}").json().get("servers", {}).get("")
    if not server or server.get("pending") == "stop":
        return None
    return datetime.fromisoformat(server["last_activity"].replace("Z", "+00:00"))


def _start_and_quiet(hub: Hub, name: str, options: dict, code: str) -> dict:
    """Start the server, run ``code`` in a kernel, close the websocket (the browser goes) and
    keep the kernel (its driver owns the tasks). Returns the server model, the cluster's node
    count and when the notebook went quiet."""
    token = create_user(hub, name)
    model = start_server(hub, name, token, options)
    kernel = Kernel(hub, name, token)
    out = kernel.run(code, timeout=120)["stdout"]
    kernel.ws.close()
    model["quiet"] = time.time()
    model["nodes"] = int(next(ln for ln in out.splitlines() if ln.startswith("NODES ")).split()[1])
    model["token"] = token
    return model


def test_idle_culler_keeps_a_busy_cluster_and_culls_an_idle_one(hub: Hub, start_culler) -> None:
    began = time.time()
    with ThreadPoolExecutor(2) as pool:
        busy_f = pool.submit(_start_and_quiet, hub, "busy", {"profile": "ray", "workers": "2"}, BUSY)
        # heads boot one at a time (local_max_parallel_starts): busy's first, so that its two
        # workers boot while the idle head does (saves a worker boot of wall time, not required)
        time.sleep(1)
        idle_f = pool.submit(_start_and_quiet, hub, "idle", {"profile": "ray", "workers": "0"}, IDLE)
        busy, idle = busy_f.result(), idle_f.result()
    assert (busy["nodes"], idle["nodes"]) == (3, 1), (busy["nodes"], idle["nodes"])
    idle_state = idle["state"]
    assert cluster_processes(idle_state)
    culler_log = start_culler()

    # the idle server goes within the timeout plus a few rounds of the culler
    deadline = time.monotonic() + TIMEOUT + 20
    while "" in hub.api("GET", "/users/idle").json().get("servers", {}):
        assert time.monotonic() < deadline, f"the idle server was not culled\n{culler_log.read_text()[-3000:]}"
        time.sleep(0.5)
    culled = culler_log.read_text()
    assert "Culling server idle" in culled, culled[-3000:]

    # the busy one is still there well past the timeout since its kernel and browser went quiet
    # (without Ray activity the culler stops it by quiet + TIMEOUT + EVERY), and the hub saw its
    # activity move on
    until = max(busy["quiet"], idle["quiet"]) + TIMEOUT + 3 * EVERY
    while time.time() < until:
        assert _last_activity(hub, "busy") is not None, f"busy was culled\n{culler_log.read_text()[-3000:]}"
        time.sleep(0.5)
    seen = _last_activity(hub, "busy")
    assert seen is not None, f"busy was culled\n{culler_log.read_text()[-3000:]}"
    assert seen.timestamp() - busy["quiet"] > TIMEOUT, (seen, busy["quiet"])
    assert "Culling server busy" not in culler_log.read_text()
    # and why: the extension saw the tasks (this endpoint is no activity itself)
    r = requests.get(
        f"{hub.url}/user/busy/rayspawner/api/cluster", headers={"Authorization": f"token {busy['token']}"}, timeout=30
    )
    assert r.status_code == 200, (r.status_code, r.text)
    activity = r.json()["activity"]
    assert activity["active"] and "3 task(s) running" in activity["reason"], activity

    quiet = max(busy["quiet"], idle["quiet"])
    print(f"spawns and kernels {quiet - began:.1f} s, culler phase {time.time() - quiet:.1f} s")

    # the culled server's Ray cluster, notebook and kernels are gone
    left = processes_left(lambda: server_processes(idle_state), 30)
    assert not left, f"the culled server left {[(p.pid, p.name()) for p in left]}"
    assert not Path(idle_state["ray_local"]["temp_dir"]).exists()
