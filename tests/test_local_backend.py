"""LocalBackend with real Ray processes: readiness, token auth, isolation, teardown.

The slow test starts two clusters (one with a worker node) through the backend,
as LocalRaySpawner does, and checks what the issue asks of local mode.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from rayspawner.backends.local import (
    MARKER, NODE_PORTS, LocalBackend, LocalCluster, PortBlocks, find_processes, listening_ports,
)
from rayspawner.config import RayConfig
from rayspawner.options import resolve_spec

CLIENT = """
import json, ray, sys
try:
    ray.init()
except Exception as e:
    print("RESULT " + json.dumps({"ok": False, "error": type(e).__name__ + ": " + str(e)[:200]}))
    sys.exit(0)
print("RESULT " + json.dumps({"ok": True, "cpus": ray.cluster_resources().get("CPU"),
      "sum": sum(ray.get([ray.remote(lambda x: x * 2).remote(i) for i in range(100)]))}))
"""


def run_client(env: dict[str, str], token: str | None) -> dict:
    child = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    child.update({k: v for k, v in env.items() if k != "RAY_AUTH_TOKEN"})
    child["RAY_CLIENT_INITIAL_CONNECTION_TIMEOUT_S"] = "1"
    if token is None:
        child.pop("RAY_AUTH_MODE", None)
    else:
        child["RAY_AUTH_TOKEN"] = token
    r = subprocess.run([sys.executable, "-c", CLIENT], env=child, capture_output=True, text=True, timeout=180)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line, f"client printed nothing: {r.stdout[-500:]} {r.stderr[-1500:]}"
    return json.loads(line[7:])


def spec_for(user: str, workers: int):
    cfg = RayConfig(ray_worker_replicas=workers, ray_head_memory="1Gi", ray_worker_memory="1Gi")
    return resolve_spec(cfg, username=user, servername="", namespace="local", notebook_image="local")


# ------------------------------------------------------------------ fast tests
def test_port_blocks_are_disjoint_locked_and_skip_busy_ports(tmp_path: Path) -> None:
    lo = 27000
    a, b = PortBlocks(str(tmp_path), lo, lo + 999), PortBlocks(str(tmp_path), lo, lo + 999)
    busy = socket.socket()
    taken_a = a.acquire(3)
    try:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken_b = b.acquire(3)  # another "hub" with the same lock dir
        assert not set(taken_a) & set(taken_b)
        for base in taken_a + taken_b:
            assert base % NODE_PORTS == 0 and lo <= base <= lo + 999 - NODE_PORTS + 1
        with pytest.raises(Exception, match="No free block"):
            b.acquire(10)
        b.release(taken_b)
        assert set(b.acquire(3)).isdisjoint(taken_a)
    finally:
        busy.close()
        a.release(taken_a)


def test_port_blocks_skip_listening_ports(tmp_path: Path) -> None:
    blocks = PortBlocks(str(tmp_path), 28000, 28199)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("0.0.0.0", 28050))
        s.listen()
        assert 28050 in listening_ports()
        assert blocks.acquire(1) == [28100]
    finally:
        s.close()


def test_state_never_holds_the_token() -> None:
    from rayspawner.backends.local import LocalNode

    c = LocalCluster("ray-x", "abcd1234", "/tmp/rsp/abcd1234", "/tmp/rsp", [LocalNode("head", 24000, 1)], token="s3cret")
    state = c.to_state()
    assert "s3cret" not in json.dumps(state) and "s3cret" not in repr(c)
    assert LocalCluster.from_state(state).token is None
    assert c.notebook_env()["RAY_ADDRESS"] == "ray://127.0.0.1:24001"
    assert c.notebook_env()["RAY_AUTH_TOKEN"] == "s3cret"


# ------------------------------------------------------------------ real Ray
@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_two_clusters_ready_isolated_token_and_torn_down() -> None:
    root = f"/tmp/rspt{secrets.token_hex(3)}"
    backend = LocalBackend(temp_root=root)
    specs = {"alice": spec_for("alice", 1), "bob": spec_for("bob", 0)}
    try:
        clusters = {u: await backend.prepare(s) for u, s in specs.items()}
        # distinct ports, temp dirs, tokens; short temp dirs
        ports = {u: {p for n in c.nodes for p in range(n.base_port, n.base_port + NODE_PORTS)} for u, c in clusters.items()}
        assert not ports["alice"] & ports["bob"]
        assert clusters["alice"].temp_dir != clusters["bob"].temp_dir and len(clusters["alice"].temp_dir) < 30
        assert clusters["alice"].token != clusters["bob"].token

        await asyncio.gather(*(backend.create(s) for s in specs.values()))
        statuses = await asyncio.gather(*(backend.wait_ready(s, 300) for s in specs.values()))
        assert all(st.head_ready for st in statuses)
        envs = {u: c.notebook_env() for u, c in clusters.items()}

        # the token travels only in environments: never on a command line
        for u, c in clusters.items():
            procs = find_processes(MARKER, c.cid)
            assert len(procs) >= 5, f"{u}: too few Ray processes found: {procs}"
            for p in procs:
                assert c.token not in " ".join(p.cmdline()), f"token on the command line of {p.pid}"

        # "ready" means a client connects (right token), and it runs tasks
        good = await asyncio.to_thread(run_client, envs["alice"], clusters["alice"].token)
        assert good["ok"] and good["sum"] == 9900 and good["cpus"] == 1.0 + 1.0, good
        # without a token, and with bob's token, alice's cluster refuses
        none, wrong = await asyncio.gather(
            asyncio.to_thread(run_client, envs["alice"], None),
            asyncio.to_thread(run_client, envs["alice"], clusters["bob"].token))
        assert not none["ok"] and not wrong["ok"], (none, wrong)
        dash = envs["bob"]["RAY_DASHBOARD_URL"] + "/api/version"
        assert requests.get(dash, timeout=10).status_code == 401
        assert requests.get(dash, headers={"Authorization": f"Bearer {clusters['alice'].token}"}, timeout=10).status_code == 403  # wrong token: forbidden (no token: 401)
        assert requests.get(dash, headers={"Authorization": f"Bearer {clusters['bob'].token}"}, timeout=10).status_code == 200

        # workers are counted
        for _ in range(60):
            st = await backend.status(specs["alice"])
            if st.workers_ready == 1:
                break
            await asyncio.sleep(1)
        assert (st.workers_ready, st.workers_desired) == (1, 1), st

        # teardown of alice: nothing of hers left, bob untouched
        await backend.delete(specs["alice"], 60)
        a = clusters["alice"]
        assert not find_processes(MARKER, a.cid, cmdline_part=a.temp_dir)
        assert not ports["alice"] & listening_ports()
        assert not Path(a.temp_dir).exists()
        assert backend.head_alive("ray-bob") and find_processes(MARKER, clusters["bob"].cid)
        assert (await backend.status(specs["alice"])).exists is False
    finally:
        await asyncio.gather(*(backend.delete(s, 60) for s in specs.values()))
        left = find_processes("RAYSPAWNER_TEMP_ROOT", root)
        for p in left:
            p.kill()
        shutil.rmtree(root, ignore_errors=True)
    assert not left, f"processes left: {left}"
    assert not (ports["alice"] | ports["bob"]) & listening_ports()
