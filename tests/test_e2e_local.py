"""End to end, local mode (issue 7): real JupyterHub with jupyterhub_config/local.py,
real jupyter_server single-user servers, real IPython kernels, real Ray processes.

1. the hub starts on free ports; users are created and get API tokens through the REST API;
2. two users start servers with the ``ray`` profile in parallel (alice: 1 worker, bob: none);
3. in each user's kernel (websocket API) ``ray.init()`` with no arguments runs the
   smoke test: 1000 results, ``ray.cluster_resources()`` shows the expected CPUs;
4. the clusters differ; alice's token is refused by bob's cluster (dashboard 401,
   Ray Client refused) while bob's own token works;
5. stopping a server leaves no process of it (Ray nodes, notebook, kernels), no
   listening port of its cluster and no temp dir, while the other user's cluster lives on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import requests
import websocket

from rayspawner.backends.local import MARKER, NODE_PORTS, find_processes, listening_ports
from rayspawner.local_spawner import SERVER_MARKER

from .local_hub import Hub, create_user, start_server, stop_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


SMOKE = """
import json, platform
from collections import Counter
import ray
ray.init()
@ray.remote
def f(x):
    return x + (platform.node(),)
counts = Counter(ray.get([f.remote(()) for _ in range(1000)]))
print("SMOKE " + json.dumps({
    "results": sum(counts.values()),
    "hosts": {k[0]: v for k, v in counts.items()},
    "cpus": ray.cluster_resources().get("CPU"),
    "alive_nodes": sum(1 for n in ray.nodes() if n["Alive"]),
}))
ray.shutdown()
"""

ENV_PROBE = """
import json, os
print("ENV " + json.dumps({k: os.environ.get(k) for k in ("RAY_ADDRESS", "RAY_DASHBOARD_URL", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_CLUSTER_NAME", "RAY_DASHBOARD_PROXY_PATH")}))
"""

# a Ray Client with a given token; retries shortened so a refusal shows in ~10 s, not 30
WRONG_TOKEN_CLIENT = """
import ray, sys
try:
    ray.init()
except Exception as e:
    print("REFUSED", type(e).__name__, str(e)[:200])
    sys.exit(0)
print("CONNECTED", ray.cluster_resources().get("CPU"))
"""


def run_in_kernel(hub: Hub, user: str, token: str, code: str, timeout: float = 180) -> str:
    """Start a kernel, execute ``code`` over the websocket API, return its stdout."""
    r = hub.user_api(user, token, "POST", "/kernels", json={"name": "python3"})
    assert r.status_code == 201, f"{r.status_code} {r.text}"
    kernel = r.json()["id"]
    ws_url = hub.url.replace("http://", "ws://") + f"/user/{user}/api/kernels/{kernel}/channels"
    ws = websocket.create_connection(ws_url, header=[f"Authorization: token {token}"], timeout=timeout)
    try:
        msg_id = uuid.uuid4().hex
        ws.send(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": user,
                       "session": uuid.uuid4().hex, "version": "5.3", "date": ""},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True},
        }))
        out: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = json.loads(ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream" and content.get("name") == "stdout":
                out.append(content["text"])
            elif kind == "error":
                raise AssertionError(f"kernel error: {content['ename']}: {content['evalue']}\n" + "\n".join(content["traceback"])[-3000:])
            elif kind == "status" and content.get("execution_state") == "idle":
                return "".join(out)
        raise AssertionError(f"kernel execution did not finish in {timeout} s; output so far: {''.join(out)[-2000:]}")
    finally:
        ws.close()
        hub.user_api(user, token, "DELETE", f"/kernels/{kernel}")


def tagged(output: str, tag: str) -> dict:
    line = next((ln for ln in output.splitlines() if ln.startswith(tag + " ")), None)
    assert line, f"no {tag} line in kernel output:\n{output[-2000:]}"
    return json.loads(line[len(tag) + 1:])


def server_processes(state: dict) -> list[psutil.Process]:
    cluster = state["ray_local"]
    procs = find_processes(MARKER, cluster["cid"], cmdline_part=cluster["temp_dir"])
    procs += find_processes(SERVER_MARKER, state["server_marker"])
    if state.get("pid") and psutil.pid_exists(state["pid"]):
        procs.append(psutil.Process(state["pid"]))
    return procs


def cluster_ports(state: dict) -> set[int]:
    return {p for n in state["ray_local"]["nodes"] for p in range(n["base_port"], n["base_port"] + NODE_PORTS)}


def ray_client_with_token(address: str, token: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update({"RAY_ADDRESS": address, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
                # Ray Client's own retry knobs: 3 short attempts instead of 5 + 10 + 15 s
                "RAY_CLIENT_INITIAL_CONNECTION_TIMEOUT_S": "1", "RAY_CLIENT_MAX_CONNECTION_TIMEOUT_S": "2"})
    r = subprocess.run([sys.executable, "-c", WRONG_TOKEN_CLIENT], env=env, capture_output=True, text=True, timeout=120)
    return r.stdout.strip().splitlines()[-1] if r.stdout.strip() else f"no output: {r.stderr[-500:]}"


def test_two_users_ray_profile_end_to_end(hub: Hub) -> None:
    t0 = time.monotonic()
    tokens = {name: create_user(hub, name) for name in ("alice", "bob")}
    options = {"alice": {"profile": "ray", "workers": "1"}, "bob": {"profile": "ray", "workers": "0"}}
    expected_cpus = {"alice": 2.0, "bob": 1.0}

    # 1. a bad option is refused with its message, before anything starts
    r = hub.api("POST", "/users/alice/server", token=tokens["alice"], json={"profile": "ray", "workers": "lots"})
    assert r.status_code == 400 and "not one of the choices" in r.json()["message"], r.text
    r = hub.api("POST", "/users/alice/server", token=tokens["alice"], json={"profile": "ray-gpu"})
    assert r.status_code == 400 and "GPU" in r.json()["message"], r.text

    # 2. both servers start in parallel with the Ray profile
    with ThreadPoolExecutor(2) as pool:
        servers = dict(zip(tokens, pool.map(lambda n: start_server(hub, n, tokens[n], options[n]), tokens)))
    states = {n: s["state"] for n, s in servers.items()}
    print({n: round(s["spawn_seconds"], 1) for n, s in servers.items()}, "spawn seconds")
    for name, state in states.items():
        assert "RAY_AUTH_TOKEN" not in json.dumps(state) and "token" not in state["ray_local"], "token in the hub's state"
    assert states["alice"]["ray_local"]["cid"] != states["bob"]["ray_local"]["cid"]
    assert not cluster_ports(states["alice"]) & cluster_ports(states["bob"]), "the two clusters share ports"

    # 3. the smoke test in each user's kernel, ray.init() without arguments
    with ThreadPoolExecutor(2) as pool:
        outputs = dict(zip(tokens, pool.map(lambda n: run_in_kernel(hub, n, tokens[n], ENV_PROBE + SMOKE), tokens)))
    envs = {n: tagged(o, "ENV") for n, o in outputs.items()}
    for name, out in outputs.items():
        smoke = tagged(out, "SMOKE")
        assert smoke["results"] == 1000, smoke
        assert smoke["cpus"] == expected_cpus[name], (name, smoke)
        assert smoke["alive_nodes"] == int(expected_cpus[name]), (name, smoke)
        env = envs[name]
        assert env["RAY_ADDRESS"].startswith("ray://127.0.0.1:") and env["RAY_AUTH_MODE"] == "token", env
        assert env["RAY_DASHBOARD_URL"].startswith("http://127.0.0.1:") and env["RAY_DASHBOARD_PROXY_PATH"], env
    assert envs["alice"]["RAY_ADDRESS"] != envs["bob"]["RAY_ADDRESS"]
    assert envs["alice"]["RAY_AUTH_TOKEN"] != envs["bob"]["RAY_AUTH_TOKEN"]

    # 4. alice's token does not work on bob's cluster; bob's does
    bob_dash = envs["bob"]["RAY_DASHBOARD_URL"] + "/api/version"
    auth = lambda n: {"Authorization": f"Bearer {envs[n]['RAY_AUTH_TOKEN']}"}  # noqa: E731
    assert requests.get(bob_dash, timeout=10).status_code == 401  # no token: unauthenticated
    assert requests.get(bob_dash, headers=auth("alice"), timeout=10).status_code == 403  # wrong token: forbidden
    assert requests.get(bob_dash, headers=auth("bob"), timeout=10).status_code == 200
    with ThreadPoolExecutor(1) as pool:
        wrong = pool.submit(ray_client_with_token, envs["bob"]["RAY_ADDRESS"], envs["alice"]["RAY_AUTH_TOKEN"])

        # 5. stop alice: every process of her server gone, ports free, temp dir removed; bob unaffected
        assert server_processes(states["alice"]), "could not see alice's processes while running"
        stop_seconds = stop_server(hub, "alice")
        left = server_processes(states["alice"])
        assert not left, f"processes of alice's server left: {[(p.pid, p.name()) for p in left]}"
        busy = cluster_ports(states["alice"]) & listening_ports()
        assert not busy, f"ports of alice's cluster still listening: {sorted(busy)}"
        assert not Path(states["alice"]["ray_local"]["temp_dir"]).exists()
        assert server_processes(states["bob"]), "stopping alice affected bob's server"
        assert wrong.result(timeout=150).startswith("REFUSED"), wrong.result()

    stop_server(hub, "bob")
    assert not server_processes(states["bob"])
    assert not cluster_ports(states["bob"]) & listening_ports()
    print(f"stop took {stop_seconds:.1f} s; whole test {time.monotonic() - t0:.1f} s")
