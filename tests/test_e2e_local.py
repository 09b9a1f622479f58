"""End to end, local mode: real JupyterHub with jupyterhub_config/local.py, real
jupyter_server single-user servers, real IPython kernels, real Ray processes.

One hub and two servers for the whole module (each Ray boot costs 30-80 s here):

- alice: the ``ray`` profile with **2 workers**, driver mode (the default); a bare
  ``ray.init()`` in her kernel is a direct driver on her head's node, quick and quiet,
  and runs the smoke test, Ray Data, a Tune grid search and a 50 MB put/get;
- ``o.brien-x_9`` (an odd name) with a named server ``exp-1``: no worker; the smoke test
  through the real proxy URLs; tokens do not cross clusters;
- then the hub is killed (SIGKILL), alice's notebook dies while it is down, and the
  hub restarts on the same database: alice's cluster goes (0 processes), the other one
  survives and still runs the smoke test; stopping it leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import psutil
import pytest
import requests

from rayspawner.backends.local import MARKER, NODE_PORTS, find_processes, listening_ports
from rayspawner.local_spawner import SERVER_MARKER
from rayspawner.versions import RAY_VERSION

from .kernel_ws import Kernel
from .local_hub import (
    Hub,
    cluster_processes,
    create_user,
    processes_left,
    server_processes,
    start_hub,
    start_server,
    stop_server,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ALICE, ODD, ODD_SERVER = "alice", "o.brien-x_9", "exp-1"

ENV_PROBE = """
import json, os
NAMES = ("RAY_ADDRESS", "RAY_DASHBOARD_URL", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_CLUSTER_NAME",
         "RAY_DASHBOARD_PROXY_PATH")
print("ENV " + json.dumps({k: os.environ.get(k) for k in NAMES}))
import time, ray
"""

# what a user types: a bare ray.init() as the cell's value (its repr is displayed, as in a notebook)
INIT = """
_t0 = time.monotonic()
_ctx = ray.init()
_init_s = time.monotonic() - _t0
_ctx
"""

SMOKE = """
import json, platform
from collections import Counter
@ray.remote
def f(x):
    return x + (platform.node(),)
counts = Counter(ray.get([f.remote(()) for _ in range(1000)]))
print("SMOKE " + json.dumps({
    "results": sum(counts.values()),
    "cpus": ray.cluster_resources().get("CPU"),
    "alive_nodes": sum(1 for n in ray.nodes() if n["Alive"]),
    "client": ray.util.client.ray.is_connected(),
}))
"""

WORKLOADS = """
import numpy as np
from ray import tune
ctx = ray.get_runtime_context()
head = [n["NodeID"] for n in ray.nodes() if n["Alive"] and "node:__internal_head__" in n["Resources"]]
t = time.monotonic()
data_sum = ray.data.range(20000).map_batches(lambda b: {"id": b["id"] * 2}).sum("id")
data_s = time.monotonic() - t

def trainable(config):
    return {"score": config["x"] ** 2}

t = time.monotonic()
grid = tune.Tuner(trainable, param_space={"x": tune.grid_search([1, 2, 3, 4])},
                  tune_config=tune.TuneConfig(metric="score", mode="max")).fit()
tune_s = time.monotonic() - t
t = time.monotonic()
arr = np.arange(50 * 2**20 // 8, dtype=np.int64)
back = ray.get(ray.put(arr))
put_get_s = time.monotonic() - t
print("WORK " + json.dumps({
    "init_s": _init_s, "node": ctx.get_node_id(), "job": ctx.get_job_id(), "head": head,
    "data_sum": int(data_sum), "data_s": data_s,
    "tune_trials": len(grid), "tune_errors": grid.num_errors, "tune_best": grid.get_best_result().config["x"],
    "tune_s": tune_s, "put_get_ok": bool((back == arr).all()) and back.nbytes == 50 * 2**20, "put_get_s": put_get_s,
}))
"""


def tagged(output: str, tag: str) -> dict:
    line = next((ln for ln in output.splitlines() if ln.startswith(tag + " ")), None)
    assert line, f"no {tag} line in kernel output:\n{output[-2000:]}"
    return json.loads(line[len(tag) + 1 :])


def cluster_ports(state: dict) -> set[int]:
    return {p for n in state["ray_local"]["nodes"] for p in range(n["base_port"], n["base_port"] + NODE_PORTS)}


def watch_progress(hub: Hub, user: str, token: str, events: list[dict]) -> threading.Thread:
    """Collect the spawn's progress events (the hub's event stream) in a thread."""

    def read() -> None:
        url = f"{hub.url}/hub/api/users/{quote(user)}/server/progress"
        with requests.get(url, headers={"Authorization": f"token {token}"}, stream=True, timeout=400) as r:
            for line in r.iter_lines(decode_unicode=True):
                if line and line.startswith("data:"):
                    events.append(json.loads(line[5:]))
                    if events[-1].get("ready") or events[-1].get("failed"):
                        return

    t = threading.Thread(target=read, daemon=True)
    t.start()
    return t


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory):
    h = start_hub(tmp_path_factory.mktemp("hub"))
    try:
        yield h
    finally:
        left = h.stop()
        assert not left, f"Ray processes left after the hub stopped: {left}"


@pytest.fixture(scope="module")
def users(hub: Hub) -> dict:
    """Both servers, started in parallel; alice's spawn progress is recorded."""
    tokens = {ALICE: create_user(hub, ALICE), ODD: create_user(hub, ODD)}
    progress: list[dict] = []
    watcher = None

    def start(name: str) -> dict:
        nonlocal watcher
        if name == ALICE:
            r = hub.api("POST", f"/users/{ALICE}/server", token=tokens[ALICE], json={"profile": "ray", "workers": "2"})
            assert r.status_code in (201, 202), r.text
            watcher = watch_progress(hub, ALICE, tokens[ALICE], progress)
            return start_server_wait(hub, ALICE)
        return start_server(hub, ODD, tokens[ODD], {"profile": "ray", "workers": "0"}, server=ODD_SERVER)

    with ThreadPoolExecutor(2) as pool:
        servers = dict(zip(tokens, pool.map(start, tokens)))
    watcher.join(30)
    print({n: round(s["spawn_seconds"], 1) for n, s in servers.items()}, "spawn seconds")
    return {
        "tokens": tokens,
        "servers": servers,
        "states": {n: s["state"] for n, s in servers.items()},
        "progress": progress,
    }


def start_server_wait(hub: Hub, name: str, timeout: float = 400) -> dict:
    started = time.monotonic()
    while True:
        server = hub.api("GET", f"/users/{name}").json().get("servers", {}).get("")
        if server and server.get("ready"):
            server["spawn_seconds"] = time.monotonic() - started
            return server
        assert server and server.get("pending"), f"server of {name} failed to start\n{hub.log_tail()}"
        assert time.monotonic() - started < timeout, f"server of {name} not ready in {timeout} s\n{hub.log_tail()}"
        time.sleep(1)


# ----------------------------------------------------------------------------- tests
def test_bad_options_are_refused_before_anything_starts(hub: Hub) -> None:
    token = create_user(hub, "carol")
    r = hub.api("POST", "/users/carol/server", token=token, json={"profile": "ray", "workers": "lots"})
    assert r.status_code == 400 and "not one of the choices" in r.json()["message"], r.text
    r = hub.api("POST", "/users/carol/server", token=token, json={"profile": "ray-gpu"})
    assert r.status_code == 400 and "GPU" in r.json()["message"], r.text
    assert not any(Path(hub.temp_root).glob("*/cluster.json")), "a refused spawn left a cluster dir"


def test_spawn_progress_and_hub_log(hub: Hub, users: dict) -> None:
    events = users["progress"]
    pcts = [e["progress"] for e in events]
    assert pcts == sorted(pcts) and all(isinstance(p, int) for p in pcts), events
    text = "\n".join(e.get("message", "") for e in events)
    for words in ("accepting connections", "Notebook server started", "Ray workers joined 2/2", "is ready"):
        assert words in text, (words, text)
    log = hub.log.read_text(errors="replace")
    # the rayspawner loggers reach the hub's own log, one line per event
    for state in users["states"].values():
        name = state["ray_local"]["name"]
        assert f"Ray cluster {name} started in" in log and state["ray_local"]["temp_dir"] in log, name


def test_driver_mode_two_workers_real_workloads(hub: Hub, users: dict) -> None:
    state, token = users["states"][ALICE], users["tokens"][ALICE]
    assert len(state["ray_local"]["nodes"]) == 3
    kernel = Kernel(hub, ALICE, token)
    try:
        env = tagged(kernel.run(ENV_PROBE)["stdout"], "ENV")
        assert env["RAY_ADDRESS"] == f"127.0.0.1:{state['ray_local']['nodes'][0]['base_port']}", env  # the GCS
        assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN"] and env["RAY_DASHBOARD_PROXY_PATH"], env
        init = kernel.run(INIT)
        shown = init["stderr"] + init["stdout"] + init["result"]
        assert "Missing packages" not in shown and "Error" not in shown and "WARN" not in shown, shown
        smoke = tagged(kernel.run(SMOKE)["stdout"], "SMOKE")
        assert smoke == {"results": 1000, "cpus": 3.0, "alive_nodes": 3, "client": False}, smoke
        work = tagged(kernel.run(WORKLOADS, timeout=400)["stdout"], "WORK")
    finally:
        kernel.close()
    print("alice's kernel:", {k: round(v, 3) if isinstance(v, float) else v for k, v in work.items()})
    assert work["node"] in work["head"], work  # a direct driver, attached to the head's raylet
    assert work["init_s"] < 1.0, f"ray.init() took {work['init_s']:.2f} s"
    assert work["data_sum"] == 2 * sum(range(20000)), work
    assert (work["tune_trials"], work["tune_errors"], work["tune_best"]) == (4, 0, 4), work
    assert work["put_get_ok"], work
    # the hub's readiness checks started no driver: the only job is the kernel's own
    dash, auth = env["RAY_DASHBOARD_URL"], {"Authorization": f"Bearer {env['RAY_AUTH_TOKEN']}"}
    jobs = requests.get(f"{dash}/api/jobs/", headers=auth, timeout=10).json()
    assert [j["job_id"] for j in jobs] == [work["job"]], jobs


def test_odd_name_named_server_and_isolation(hub: Hub, users: dict) -> None:
    state, token = users["states"][ODD], users["tokens"][ODD]
    kernel = Kernel(hub, ODD, token, server=ODD_SERVER)
    try:
        out = kernel.run(ENV_PROBE + INIT + SMOKE)["stdout"]
    finally:
        kernel.close()
    env, smoke = tagged(out, "ENV"), tagged(out, "SMOKE")
    assert smoke == {"results": 1000, "cpus": 1.0, "alive_nodes": 1, "client": False}, smoke
    assert env["RAY_CLUSTER_NAME"] == state["ray_local"]["name"] != users["states"][ALICE]["ray_local"]["name"]
    assert not cluster_ports(state) & cluster_ports(users["states"][ALICE]), "the two clusters share ports"
    for s in users["states"].values():
        assert "RAY_AUTH_TOKEN" not in json.dumps(s) and "token" not in s["ray_local"], "token in the hub's state"
    # alice's token is refused by this cluster's dashboard
    alice_env = users["states"][ALICE]
    alice_token = find_processes(MARKER, alice_env["ray_local"]["cid"])[0].environ()["RAY_AUTH_TOKEN"]
    dash = env["RAY_DASHBOARD_URL"] + "/api/version"
    assert requests.get(dash, timeout=10).status_code == 401
    assert requests.get(dash, headers={"Authorization": f"Bearer {alice_token}"}, timeout=10).status_code == 403
    assert (
        requests.get(dash, headers={"Authorization": f"Bearer {env['RAY_AUTH_TOKEN']}"}, timeout=10).status_code == 200
    )


def test_dashboard_through_the_hub_for_its_owner_only(hub: Hub, users: dict) -> None:
    """alice reaches her cluster's dashboard through the hub's proxy and her own server;
    another user and an anonymous browser do not."""
    bob = create_user(hub, "bob")
    url = f"{hub.url}/user/{ALICE}/ray-dashboard/api/version"
    r = requests.get(url, headers={"Authorization": f"token {users['tokens'][ALICE]}"}, timeout=60)
    assert r.status_code == 200 and r.json()["ray_version"] == RAY_VERSION, (r.status_code, r.text[:500])
    r = requests.get(url, headers={"Authorization": f"token {bob}"}, timeout=60, allow_redirects=False)
    assert r.status_code == 403 and "ray_version" not in r.text, (r.status_code, r.text[:300])
    r = requests.get(url, timeout=60, allow_redirects=False)
    assert r.status_code in (302, 403) and "ray_version" not in r.text, (r.status_code, r.text[:300])
    if r.status_code == 302:
        assert "/hub/" in r.headers.get("location", "") or "oauth" in r.headers.get("location", ""), r.headers


def test_hub_crash_then_dead_notebook_leaves_no_cluster(hub: Hub, users: dict) -> None:
    alice, odd = users["states"][ALICE], users["states"][ODD]
    assert cluster_processes(alice) and cluster_processes(odd)
    hub.kill()  # SIGKILL: no cleanup at all
    assert cluster_processes(alice) and cluster_processes(odd), "the clusters should outlive a hub crash"
    os.kill(alice["pid"], signal.SIGKILL)  # alice's notebook dies while the hub is down
    psutil.wait_procs([psutil.Process(alice["pid"])], timeout=10) if psutil.pid_exists(alice["pid"]) else None
    hub.restart()

    left = processes_left(lambda: cluster_processes(alice), 120)
    assert not left, f"alice's cluster still runs {len(left)} processes\n{hub.log_tail()}"
    assert not Path(alice["ray_local"]["temp_dir"]).exists()
    assert not cluster_ports(alice) & listening_ports()
    assert not find_processes(SERVER_MARKER, alice["server_marker"]), "alice's kernels outlived her notebook"
    assert "" not in hub.api("GET", f"/users/{ALICE}").json()["servers"]

    # the other user's server and cluster survived, and still work
    model = hub.api("GET", f"/users/{quote(ODD)}").json()["servers"]
    assert model.get(ODD_SERVER, {}).get("ready"), model
    kernel = Kernel(hub, ODD, users["tokens"][ODD], server=ODD_SERVER)
    try:
        smoke = tagged(kernel.run(ENV_PROBE + INIT + SMOKE)["stdout"], "SMOKE")
    finally:
        kernel.close()
    assert smoke["results"] == 1000 and smoke["alive_nodes"] == 1, smoke

    # stopping it leaves no process, port or temp dir of it
    stop_server(hub, ODD, server=ODD_SERVER)
    assert not server_processes(odd)
    assert not cluster_ports(odd) & listening_ports()
    assert not Path(odd["ray_local"]["temp_dir"]).exists()
