"""Ray activity is notebook activity: a real jupyter_server with rayspawner.activity and a
real local Ray cluster (one head, shared by the module).

- an idle cluster, with an idle kernel and even a connected but idle driver (which Ray's
  own ``/api/component_activities`` reports ACTIVE), leaves ``/api/status``'s
  ``last_activity`` alone;
- a long task (the kernel idle: the work runs in the cluster) keeps it fresh, and so
  does a submitted job; it stops moving when they end;
- ``/rayspawner/api/cluster`` shows the cluster's size, behind the server's auth.
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
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
import requests

from rayspawner.activity import server_args
from rayspawner.backends.local import MARKER_ROOT, LocalBackend, find_processes
from rayspawner.config import RayConfig
from rayspawner.options import resolve_spec

pytestmark = pytest.mark.slow

DRIVER = """
import sys, time, ray
ray.init()
@ray.remote
def work(s):
    time.sleep(s)
    return s
seconds, linger = float(sys.argv[1]), float(sys.argv[2])
if seconds:
    ray.get(work.remote(seconds))
print("done", flush=True)
time.sleep(linger)  # still connected, doing nothing
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster_env() -> Iterator[dict[str, str]]:
    if os.environ.get("RAYSPAWNER_TEST_CLUSTER_ENV"):  # a cluster kept up between runs, while developing
        yield json.loads(Path(os.environ["RAYSPAWNER_TEST_CLUSTER_ENV"]).read_text())["env"]
        return
    root = f"/tmp/rsa{secrets.token_hex(3)}"
    spec = resolve_spec(
        RayConfig(ray_worker_replicas=0, ray_head_memory="1Gi"),
        username="act",
        servername="",
        namespace="local",
        notebook_image="local",
    )
    backend = LocalBackend(temp_root=root)

    async def up():
        await backend.prepare(spec)
        cluster = backend.cluster(spec)
        await backend.create(spec)
        await backend.wait_ready(spec, 400)
        return cluster

    try:
        cluster = asyncio.run(up())
        yield cluster.notebook_env()
    finally:
        asyncio.run(backend.delete(spec, 60))
        for p in find_processes(MARKER_ROOT, root):
            p.kill()
        shutil.rmtree(root, ignore_errors=True)


class Server:
    def __init__(self, url: str, token: str, proc: subprocess.Popen, log: Path):
        self.url, self.token, self.proc, self.log = url, token, proc, log

    def get(self, path: str, auth: bool = True) -> requests.Response:
        headers = {"Authorization": f"token {self.token}"} if auth else {}
        return requests.get(self.url + path, headers=headers, timeout=30)

    def last_activity(self) -> datetime:
        return datetime.fromisoformat(self.get("/api/status").json()["last_activity"].replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def server(cluster_env: dict[str, str], tmp_path_factory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("js")
    port, token = free_port(), secrets.token_hex(12)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(cluster_env)
    args = [
        sys.executable,
        "-m",
        "jupyter_server",
        f"--ServerApp.port={port}",
        "--ServerApp.ip=127.0.0.1",
        f"--IdentityProvider.token={token}",
        "--ServerApp.open_browser=False",
        f"--ServerApp.root_dir={work}",
        "--RayActivity.interval=1",
        *server_args(),
    ]
    if os.geteuid() == 0:
        args.append("--allow-root")
    log = work / "server.log"
    proc = subprocess.Popen(args, env=env, cwd=work, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    s = Server(f"http://127.0.0.1:{port}", token, proc, log)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if s.get("/api/status").status_code == 200:
                break
        except requests.ConnectionError:
            time.sleep(0.3)
    else:
        raise AssertionError(log.read_text()[-3000:])
    yield s
    proc.terminate()
    proc.wait(30)


def driver(env: dict[str, str], seconds: float, linger: float) -> subprocess.Popen:
    child = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    child.update(env)
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(seconds), str(linger)],
        env=child,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def age(server: Server) -> float:
    return (datetime.now(timezone.utc) - server.last_activity()).total_seconds()


def test_extension_loaded_and_cluster_info_needs_auth(server: Server, cluster_env) -> None:
    assert "rayspawner.activity: Ray work on" in server.log.read_text()
    assert server.get("/rayspawner/api/cluster", auth=False).status_code == 403
    info = server.get("/rayspawner/api/cluster").json()
    assert info["cluster"] == cluster_env["RAY_CLUSTER_NAME"] and info["dashboard"] == "ray-dashboard/"
    assert info["total"]["cpu"] == 1 and info["total"]["gpu"] == 0
    assert info["total"]["memory_bytes"] + info["total"]["object_store_bytes"] == 2**30
    assert [n["head"] for n in info["nodes"]] == [True]


def test_idle_cluster_idle_kernel_and_idle_driver_are_not_activity(server: Server, cluster_env) -> None:
    kernel = requests.post(server.url + "/api/kernels", headers={"Authorization": f"token {server.token}"}, timeout=60)
    assert kernel.status_code == 201
    idle = driver(cluster_env, 0, 40)  # connected: Ray's component_activities says ACTIVE
    try:
        for line in idle.stdout:  # Ray's log lines first
            if line.strip() == "done":
                break
        auth = {"Authorization": f"Bearer {cluster_env['RAY_AUTH_TOKEN']}"}
        ray_says = requests.get(
            cluster_env["RAY_DASHBOARD_URL"] + "/api/component_activities", headers=auth, timeout=30
        ).json()
        assert ray_says["driver"]["is_active"] == "ACTIVE"
        time.sleep(3)
        before = server.last_activity()
        time.sleep(6)
        assert server.last_activity() == before
        assert server.get("/rayspawner/api/cluster").json()["activity"]["active"] is False
    finally:
        idle.kill()
        requests.delete(
            server.url + f"/api/kernels/{kernel.json()['id']}",
            headers={"Authorization": f"token {server.token}"},
            timeout=30,
        )


def test_long_task_keeps_last_activity_fresh_then_stops(server: Server, cluster_env) -> None:
    time.sleep(5)  # the previous test's kernel request was activity
    stale = age(server)
    busy = driver(cluster_env, 10, 0)
    try:
        ages = []
        deadline = time.monotonic() + 120
        while busy.poll() is None and time.monotonic() < deadline:
            ages.append(age(server))
            time.sleep(1)
        assert busy.returncode == 0, busy.stdout.read()
        fresh = [a for a in ages if a < 4]
        # fresh again and again while the task ran (not one stamp at its start)
        assert len(fresh) >= 6 and stale > 4, (stale, ages)
        time.sleep(4)
        settled = server.last_activity()
        time.sleep(5)
        assert server.last_activity() == settled
    finally:
        busy.kill()


def test_submitted_job_is_activity(server: Server, cluster_env) -> None:
    from ray.job_submission import JobSubmissionClient

    time.sleep(4)
    assert age(server) > 4
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(cluster_env)
    saved = dict(os.environ)
    os.environ.update(cluster_env)
    try:
        client = JobSubmissionClient(
            cluster_env["RAY_DASHBOARD_URL"], headers={"Authorization": f"Bearer {cluster_env['RAY_AUTH_TOKEN']}"}
        )
        job = client.submit_job(entrypoint="sleep 15")
    finally:
        os.environ.clear()
        os.environ.update(saved)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and age(server) > 3:
        time.sleep(1)
    assert age(server) <= 3, server.get("/rayspawner/api/cluster").json()
    info = server.get("/rayspawner/api/cluster").json()["activity"]
    assert info["active"] and "job" in info["reason"], info
    assert job
