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
import time
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from rayspawner.backends.local import (
    MARKER,
    NODE_PORTS,
    LocalBackend,
    LocalCluster,
    PortBlocks,
    find_processes,
    listening_ports,
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


def spec_for(user: str, workers: int, **kw):
    cfg = RayConfig(ray_worker_replicas=workers, ray_head_memory="1Gi", ray_worker_memory="1Gi", **kw)
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


def test_state_never_holds_the_token_and_env_follows_the_mode() -> None:
    from rayspawner.backends.local import LocalNode

    c = LocalCluster(
        "ray-x", "abcd1234", "/tmp/rsp/abcd1234", "/tmp/rsp", [LocalNode("head", 24000, 1)], token="s3cret"
    )
    state = c.to_state()
    assert "s3cret" not in json.dumps(state) and "s3cret" not in repr(c)
    assert LocalCluster.from_state(state).token is None
    assert c.notebook_env()["RAY_ADDRESS"] == "127.0.0.1:24000"  # driver mode: the GCS
    assert c.notebook_env()["RAY_AUTH_TOKEN"] == "s3cret"
    c.driver = False
    assert c.notebook_env()["RAY_ADDRESS"] == "ray://127.0.0.1:24001"
    assert LocalCluster.from_state(c.to_state()).notebook_env()["RAY_ADDRESS"] == "ray://127.0.0.1:24001"
    # a state saved before nodes had their own temp dirs still loads
    old = {**state, "nodes": [{"role": "head", "base_port": 24000, "num_cpus": 1, "pid": 7}]}
    assert LocalCluster.from_state(old).head.pid == 7


async def test_every_node_has_its_own_temp_dir_label_and_memory(tmp_path: Path) -> None:
    from rayspawner.spec import MIN_OBJECT_STORE_BYTES

    backend = LocalBackend(temp_root=str(tmp_path / "r"), port_range=(29000, 29999))
    spec = spec_for("carol", 2)
    await backend.prepare(spec)
    cluster = backend.cluster(spec)
    try:
        args = [backend._args(cluster, n) for n in cluster.nodes]
        temp_dirs = [next(a for a in arg if a.startswith("--temp-dir=")) for arg in args]
        assert len(set(temp_dirs)) == 3, temp_dirs  # own session dirs: no shared socket names
        # short: <root>/<8 hex>/w<i> keeps Ray's socket paths under ~107 characters
        assert [t[len("--temp-dir=") :] for t in temp_dirs] == [
            cluster.temp_dir,
            f"{cluster.temp_dir}/w1",
            f"{cluster.temp_dir}/w2",
        ]
        assert [next(a for a in arg if a.startswith("--labels=")) for arg in args] == [
            "--labels=rayspawner-node=head",
            "--labels=rayspawner-node=workers-0",
            "--labels=rayspawner-node=workers-1",
        ]
        for node, arg in zip(cluster.nodes, args):
            memory = int(next(a for a in arg if a.startswith("--memory="))[9:])
            store = int(next(a for a in arg if a.startswith("--object-store-memory="))[22:])
            assert memory + store == 2**30 and store >= MIN_OBJECT_STORE_BYTES, (node.role, memory, store)
        info = json.loads(Path(cluster.temp_dir, "cluster.json").read_text())
        assert info["hub_pid"] == os.getpid() and "token" not in json.dumps(info)
    finally:
        backend.blocks.release(n.base_port for n in cluster.nodes)


# ------------------------------------------------------------------ real Ray
DRIVER = """
import json, time, ray
t = time.monotonic()
ray.init()
took = time.monotonic() - t
head = [n["NodeID"] for n in ray.nodes() if n["Alive"] and "node:__internal_head__" in n["Resources"]]
print("RESULT " + json.dumps({"init_s": took, "node": ray.get_runtime_context().get_node_id(), "head": head,
      "alive": sum(1 for n in ray.nodes() if n["Alive"]), "cpus": ray.cluster_resources().get("CPU"),
      "sum": sum(ray.get([ray.remote(lambda x: x * 2).remote(i) for i in range(100)]))}))
"""


def run_driver(env: dict[str, str]) -> dict:
    child = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    child.update(env)
    r = subprocess.run([sys.executable, "-c", DRIVER], env=child, capture_output=True, text=True, timeout=180)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line, f"driver printed nothing: {r.stdout[-500:]} {r.stderr[-1500:]}"
    return json.loads(line[7:])


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_two_clusters_ready_isolated_token_and_torn_down() -> None:
    """alice: 2 workers, driver mode; bob: no worker, client mode (Ray Client)."""
    root = f"/tmp/rspt{secrets.token_hex(3)}"
    backend = LocalBackend(temp_root=root)
    specs = {"alice": spec_for("alice", 2), "bob": spec_for("bob", 0, ray_connect_mode="client")}
    t_start = time.monotonic()

    def phase(what: str) -> None:
        print(f"[{time.monotonic() - t_start:6.1f} s] {what}", flush=True)

    try:
        for s in specs.values():
            await backend.prepare(s)
        clusters = {u: backend.cluster(s) for u, s in specs.items()}
        # distinct ports, temp dirs, tokens; short temp dirs
        ports = {
            u: {p for n in c.nodes for p in range(n.base_port, n.base_port + NODE_PORTS)} for u, c in clusters.items()
        }
        assert not ports["alice"] & ports["bob"]
        assert clusters["alice"].temp_dir != clusters["bob"].temp_dir and len(clusters["alice"].temp_dir) < 30
        assert clusters["alice"].token != clusters["bob"].token

        await asyncio.gather(*(backend.create(s) for s in specs.values()))
        # ready = Ray reports the head and every requested worker ALIVE
        statuses = await asyncio.gather(*(backend.wait_ready(s, 400) for s in specs.values()))
        assert [(st.head_ready, st.workers_ready) for st in statuses] == [(True, 2), (True, 0)], statuses
        phase("both clusters ready")
        envs = {u: c.notebook_env() for u, c in clusters.items()}
        assert envs["alice"]["RAY_ADDRESS"] == clusters["alice"].gcs_address
        assert envs["bob"]["RAY_ADDRESS"].startswith("ray://")

        # every node its own socket names (one shared session dir gave two raylets "raylet.1")
        a = clusters["alice"]
        # (the live raylets': a head whose first boot missed Ray's window leaves a dead one's socket)
        raylets = [p for p in find_processes(MARKER, a.cid) if p.name() == "raylet"]
        sockets = [
            arg.split("=", 1)[1] for p in raylets for arg in p.cmdline() if arg.startswith("--raylet_socket_name=")
        ]
        assert len(raylets) == 3 and len(set(sockets)) == 3 and max(map(len, sockets)) < 107, sockets

        # readiness started no driver: alice's dashboard lists no job before the user's own
        auth = {"Authorization": f"Bearer {a.token}"}
        jobs = requests.get(envs["alice"]["RAY_DASHBOARD_URL"] + "/api/jobs/", headers=auth, timeout=10).json()
        assert jobs == [], jobs

        # the token travels only in environments: never on a command line
        for u, c in clusters.items():
            procs = find_processes(MARKER, c.cid)
            assert len(procs) >= 5, f"{u}: too few Ray processes found: {procs}"
            for p in procs:
                assert c.token not in " ".join(p.cmdline()), f"token on the command line of {p.pid}"

        # bob (client mode): "ready" means a Ray Client connects (right token) and runs tasks;
        # without a token, and with alice's token, bob's cluster refuses. Mostly Ray Client's own
        # waiting, so it runs while alice's checks below do.
        async def bob_client_checks() -> tuple[dict, dict, dict]:
            good = await asyncio.to_thread(run_client, envs["bob"], clusters["bob"].token)
            none, wrong = await asyncio.gather(
                asyncio.to_thread(run_client, envs["bob"], None),
                asyncio.to_thread(run_client, envs["bob"], clusters["alice"].token),
            )
            return good, none, wrong

        bob_checks = asyncio.ensure_future(bob_client_checks())
        dash = envs["bob"]["RAY_DASHBOARD_URL"] + "/api/version"
        assert requests.get(dash, timeout=10).status_code == 401
        assert requests.get(dash, headers=auth, timeout=10).status_code == 403  # wrong token: forbidden (no token: 401)
        assert (
            requests.get(dash, headers={"Authorization": f"Bearer {clusters['bob'].token}"}, timeout=10).status_code
            == 200
        )

        # alice: a bare ray.init() is a direct driver on the head's node and sees 3 nodes
        drv = await asyncio.to_thread(run_driver, envs["alice"])
        assert drv["node"] in drv["head"] and drv["alive"] == 3 and drv["cpus"] == 3.0 and drv["sum"] == 9900, drv
        print(f"driver-mode ray.init() took {drv['init_s']:.3f} s")
        assert drv["init_s"] < 1.0, drv
        phase("alice's driver ran")

        # a worker whose raylet dies (its `ray start --block` parent lives on) is seen and restarted
        victim = a.workers[1]
        raylets = [p for p in find_processes(None, "", cmdline_part=victim.temp_dir + "/") if p.name() == "raylet"]
        assert len(raylets) == 1, raylets
        raylets[0].kill()
        for _ in range(240):  # Ray marks the old node DEAD and the restarted one joins
            nodes = requests.get(
                envs["alice"]["RAY_DASHBOARD_URL"] + "/api/v0/nodes?limit=100&detail=true", headers=auth, timeout=10
            ).json()["data"]["result"]["result"]
            alive = sorted(n["labels"]["rayspawner-node"] for n in nodes if n["state"] == "ALIVE")
            dead = [n["labels"]["rayspawner-node"] for n in nodes if n["state"] == "DEAD"]
            if alive == ["head", "workers-0", "workers-1"] and dead == ["workers-1"]:
                break
            await backend.status(specs["alice"])  # what the spawner's poll and progress do
            await asyncio.sleep(1)
        assert (alive, dead) == (["head", "workers-0", "workers-1"], ["workers-1"]), nodes
        assert victim.restarts == 1 and any("workers-1 died" in e for e in a.events), a.events
        assert (await backend.status(specs["alice"])).workers_ready == 2
        phase("the killed worker was restarted and rejoined")

        good, none, wrong = await bob_checks
        assert good["ok"] and good["sum"] == 9900 and good["cpus"] == 1.0, good
        assert not none["ok"] and not wrong["ok"], (none, wrong)
        phase("bob's Ray Client checks done")

        # teardown of alice: nothing of hers left, bob untouched
        await backend.delete(specs["alice"], 60)
        assert not find_processes(MARKER, a.cid, cmdline_part=a.temp_dir)
        assert not ports["alice"] & listening_ports()
        assert not Path(a.temp_dir).exists()
        assert backend.head_alive(specs["bob"]) and find_processes(MARKER, clusters["bob"].cid)
        assert (await backend.status(specs["alice"])).exists is False
        phase("alice torn down")
    finally:
        if "bob_checks" in locals() and not bob_checks.done():
            bob_checks.cancel()
        await asyncio.gather(*(backend.delete(s, 60) for s in specs.values()))
        left = find_processes("RAYSPAWNER_TEMP_ROOT", root)
        for p in left:
            p.kill()
        shutil.rmtree(root, ignore_errors=True)
    assert not left, f"processes left: {left}"
    assert not (ports["alice"] | ports["bob"]) & listening_ports()
