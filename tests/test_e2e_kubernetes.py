"""The Kubernetes path end to end, with real Ray, in driver mode (the default): RaySpawner → the
real test cluster (API server, restricted Pod Security admission, scheduler, Deployment and
EndpointSlice controllers) → its process node runs the generated head, two worker pods and the
notebook pod (with its Ray node sidecar) as real processes, each pod in its own network and
PID namespace → processes in the notebook container's sandbox (``pods/exec`` through the API
server), with only the env the spawner injected, run a bare ``ray.init()`` as a direct driver:
the seed smoke test, Ray Data, Tune, a 50 MB put/get, ``ray job submit``, Ray Client against
the same head, and every token-auth case of ``tests/ray_auth_checks.py`` (one real cluster
serves both).

Also exercised: the version check (a ``ray_image`` different from the notebook image makes
both images report their Ray/Python versions through init containers), a "kernel restart"
(a second driver process), the notebook's Ray node dying while another driver's job runs,
and that stop leaves no process, no object and no network namespace behind.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from typing import Any

import pytest

from rayspawner.manifests.notebook import NOTEBOOK_NODE_CONTAINER
from testcluster.kubeconfig import https_request
from testcluster.node.netns import netns_available

from .ray_auth_checks import check_token_auth, in_pod
from .spawner_fixtures import ray_objects

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.slow,
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="the process kubelet needs root"),
    pytest.mark.skipif(os.geteuid() == 0 and not netns_available(), reason="no network namespaces here"),
]

PROFILES = [
    {
        "display_name": "Ray",
        "slug": "ray",
        "default": True,
        "kubespawner_override": {
            "ray_enabled": True,
            "ray_worker_replicas": 2,
            "ray_head_memory": "1Gi",
            "ray_worker_memory": "1Gi",
            "ray_head_cpu": "1",
            "ray_worker_cpu": "1",
        },
    }
]

# What a user runs first, from a bare ray.init() (RAY_ADDRESS and the token come from the env).
WORKLOAD = r"""
import json, platform, time
from collections import Counter
import numpy as np
import ray

t0 = time.monotonic()
ray.init()
init_seconds = time.monotonic() - t0
me = ray.get_runtime_context().get_node_id()

deadline = time.time() + 180
while ray.cluster_resources().get("CPU", 0) < 3 and time.time() < deadline:
    time.sleep(1)  # the workers join a little after the head is ready
nodes = [n for n in ray.nodes() if n["Alive"]]
notebook = [n for n in nodes if (n.get("Labels") or {}).get("rayspawner/role") == "notebook"]

@ray.remote
def f(x):
    s = 0
    for i in range(20000):
        s += i * i
    return platform.node(), ray.get_runtime_context().get_node_id()

t0 = time.monotonic()
tasks = Counter(ray.get([f.remote(i) for i in range(1000)]))
smoke_seconds = time.monotonic() - t0

data_nodes = Counter()
def double(batch):
    return {"id": batch["id"] * 2, "node": [ray.get_runtime_context().get_node_id()] * len(batch["id"])}
rows = ray.data.range(20000).map_batches(double).take_all()
data_sum = sum(r["id"] for r in rows)
data_nodes.update(r["node"] for r in rows)

from ray import tune
def objective(config):
    return {"score": config["x"] ** 2, "node": ray.get_runtime_context().get_node_id()}
results = tune.Tuner(objective, param_space={"x": tune.grid_search([1, 2, 3, 4])},
                     tune_config=tune.TuneConfig(metric="score", mode="max")).fit()
best = results.get_best_result().config["x"]

@ray.remote
def size(a):
    return int(a.nbytes), ray.get_runtime_context().get_node_id()
big = np.ones(50 * 2**20, dtype=np.uint8)
t0 = time.monotonic()
back = ray.get(ray.put(big))
remote_size, remote_node = ray.get(size.remote(ray.put(big)))
put_get_seconds = time.monotonic() - t0

print("RESULT " + json.dumps({
    "init_seconds": init_seconds, "driver_node": me,
    "nodes": [{"id": n["NodeID"], "cpu": n["Resources"].get("CPU", 0), "gpu": n["Resources"].get("GPU", 0),
               "memory": n["Resources"].get("memory", 0), "labels": n.get("Labels") or {}} for n in nodes],
    "notebook_node": notebook[0]["NodeID"] if len(notebook) == 1 else None,
    "task_hosts": dict(Counter(h for (h, _), c in tasks.items() for _ in range(c))),
    "task_nodes": sorted({n for (_, n) in tasks}), "smoke_seconds": smoke_seconds,
    "data_sum": data_sum, "data_nodes": sorted(data_nodes), "tune_best": best,
    "put_get": [int(back.nbytes), remote_size], "remote_node": remote_node, "put_get_seconds": put_get_seconds,
}), flush=True)
"""

RESTARTED_KERNEL = r"""
import json, ray
ray.init()
print("RESULT " + json.dumps({"driver_node": ray.get_runtime_context().get_node_id(),
                              "sum": sum(ray.get([ray.remote(lambda x: x).remote(i) for i in range(10)]))}), flush=True)
"""

# A Ray job (another driver, on the head) that outlives the notebook's Ray node.
JOB = r"""
import json, os, time, urllib.request as u
from ray.job_submission import JobSubmissionClient
client = JobSubmissionClient()  # RAY_API_SERVER_ADDRESS and the token from the env
job = client.submit_job(entrypoint="python -c \"import ray, time; ray.init(); "
                                   "[ray.get(ray.remote(lambda: time.sleep(1)).remote()) for _ in range(10)]; "
                                   "print('job done')\"")
print("RESULT " + json.dumps({"job": job}), flush=True)
"""

JOB_STATUS = r"""
import json, sys
from ray.job_submission import JobSubmissionClient
client = JobSubmissionClient()
logs = client.get_job_logs(sys.argv[1])
print("RESULT " + json.dumps({"status": client.get_job_status(sys.argv[1]).value, "done": "job done" in logs,
                              "logs": logs[-500:]}), flush=True)
"""

CLIENT = r"""
import json, ray, time
addr = "ray://" + __import__("os").environ["RAY_ADDRESS"].split(":")[0] + ":10001"
for attempt in range(4):
    try:
        ray.init(addr)
        break
    except ConnectionError as e:  # FIELD-NOTES: a fresh head's first client server may fail to start
        if attempt == 3:
            raise
        time.sleep(2)
print("RESULT " + json.dumps({"sum": sum(ray.get([ray.remote(lambda x: x).remote(i) for i in range(10)]))}), flush=True)
"""

KILL_NODE = r"""
import psutil
killed = [p.pid for p in psutil.process_iter(["name"]) if p.info["name"] == "raylet"]
for pid in killed:
    psutil.Process(pid).kill()
print("killed", killed)
"""


def logs(kube: Any, pod: str, container: str) -> str:
    """``kubectl logs``: through the API server, from the node's kubelet port."""
    c = kube.cluster.client
    path = f"/api/v1/namespaces/{kube.ns}/pods/{pod}/log?container={container}"
    code, raw = https_request("GET", c.server + path, c.ca, c.cert)
    return raw.decode(errors="replace") if code == 200 else f"(no logs: HTTP {code})"


async def run_py(kube: Any, pod: str, script: str, *args: str, timeout: float = 300) -> dict[str, Any]:
    rc, out = await in_pod(kube, pod, ["python", "-c", script, *args], timeout)
    assert rc == 0 and "RESULT " in out, out[-4000:]
    return json.loads(out.rsplit("RESULT ", 1)[1].splitlines()[0])


def netns_names() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


@pytest.mark.timeout(900)  # one real cluster for every check: ~160 s alone, more on a loaded machine
async def test_driver_mode_on_real_ray(kube_factory, ray_spawner_factory):
    before = netns_names()
    t_start = time.monotonic()

    def phase(what: str) -> None:
        print(f"[{time.monotonic() - t_start:6.1f} s] {what}", flush=True)

    kube = kube_factory(node="process")
    sp = ray_spawner_factory(
        kube,
        profile_list=PROFILES,
        start_timeout=300,
        ray_orphan_sweep_interval=0,
        ray_stop_timeout=90,
        cmd=["/bin/sh", "-c", "exec sleep 3600", "notebook"],
        # a different image name: both sides must report their versions (same env here, so they match)
        ray_image="quay.io/rayspawner/ray:2.60.0",
        # a loaded 2-core machine misses Ray's own start-up windows (raylet 30 s, dashboard agent 15 s)
        ray_extra_env={"RAY_raylet_start_wait_time_s": "180", "RAY_agent_register_timeout_ms": "60000"},
    )
    sp.user_options = {"profile": "ray"}
    try:
        await asyncio.wait_for(sp.start(), 320)
    except Exception:
        name = sp.ray_session.spec.name if sp.ray_session.spec else "?"
        print(logs(kube, f"{name}-head", "ray-head")[-3000:])
        raise
    phase("spawned")
    name = sp.ray_session.spec.name
    head = kube.get_object("pods", kube.ns, f"{name}-head")
    versions = json.loads(head["status"]["initContainerStatuses"][0]["state"]["terminated"]["message"])
    assert versions["ray"] == "2.60.0"
    assert sp.ray_session.version_warning is None
    try:
        r = await run_py(kube, sp.pod_name, WORKLOAD)
    except AssertionError:
        print(logs(kube, sp.pod_name, NOTEBOOK_NODE_CONTAINER)[-3000:])
        raise
    phase("workload ran")
    print("driver mode:", {k: r[k] for k in ("init_seconds", "smoke_seconds", "put_get_seconds")})

    # head + 2 workers + the notebook's own node, which offers nothing to schedule on
    assert len(r["nodes"]) == 4, r["nodes"]
    nb = r["notebook_node"]
    assert nb is not None, r["nodes"]
    nb_info = next(n for n in r["nodes"] if n["id"] == nb)
    assert nb_info["cpu"] == 0 and nb_info["gpu"] == 0 and nb_info["memory"] == 0, nb_info
    assert sum(n["cpu"] for n in r["nodes"]) == 3.0  # head 1 CPU + 2 workers, as the spawner sized them
    # the kernel is a direct driver attached to the notebook's own node (not the head's)
    assert r["driver_node"] == nb
    # nothing the user ran landed on the notebook, and it spread over the cluster's pods
    assert sum(r["task_hosts"].values()) == 1000
    worker_pods = [
        p["metadata"]["name"]
        for p in kube.list_objects(
            "pods", kube.ns, label_selector=f"ray.io/cluster={name},app.kubernetes.io/component=ray-worker"
        )
    ]
    assert set(r["task_hosts"]) <= {f"{name}-head", *worker_pods} and len(r["task_hosts"]) >= 2, r["task_hosts"]
    assert nb not in r["task_nodes"] and nb not in r["data_nodes"]
    assert r["data_sum"] == 2 * sum(range(20000))
    assert r["tune_best"] == 4
    assert r["put_get"] == [50 * 2**20, 50 * 2**20] and r["remote_node"] != nb

    # token auth: right, missing, wrong and no token, for drivers, the GCS, HTTP and raycheck.
    # Mostly Ray's own ~20 s wait on a refused client: it runs while the next two checks do.
    token_checks = asyncio.ensure_future(check_token_auth(kube, sp))
    try:
        # a "kernel restart": a new driver process attaches again, instantly
        again = await run_py(kube, sp.pod_name, RESTARTED_KERNEL)
        assert again == {"driver_node": nb, "sum": 45}
        phase("kernel restarted")
        # Ray Client still reaches the same head (the fallback mode's path)
        assert (await run_py(kube, sp.pod_name, CLIENT))["sum"] == 45
        phase("Ray Client ran")
    except BaseException:
        token_checks.cancel()
        raise
    await token_checks
    phase("token checks done")

    # another driver's job (ray job submit) survives the notebook's Ray node dying; the kubelet
    # restarts the sidecar, which rejoins, and a new kernel attaches to it
    job = (await run_py(kube, sp.pod_name, JOB))["job"]
    rc, out = await in_pod(kube, sp.pod_name, ["python", "-c", KILL_NODE], 30, container=NOTEBOOK_NODE_CONTAINER)
    assert rc == 0 and "killed [" in out and "killed []" not in out, out
    deadline = time.monotonic() + 120
    while True:
        status = await run_py(kube, sp.pod_name, JOB_STATUS, job)
        if status["status"] in ("SUCCEEDED", "FAILED", "STOPPED"):
            break
        assert time.monotonic() < deadline, status
        await asyncio.sleep(2)
    assert status["status"] == "SUCCEEDED" and status["done"], status
    phase("job outlived the notebook's node")
    deadline = time.monotonic() + 120
    while True:
        try:  # fails while the sidecar restarts (no raylet in the pod), then attaches to the new node
            rejoined = await run_py(kube, sp.pod_name, RESTARTED_KERNEL, timeout=60)
            if rejoined["driver_node"] != nb:
                break
        except AssertionError:
            pass
        assert time.monotonic() < deadline, "the notebook's Ray node never rejoined"
        await asyncio.sleep(2)
    assert rejoined["sum"] == 45
    phase("notebook's node rejoined")

    t0 = time.monotonic()
    await asyncio.wait_for(sp.stop(), 120)
    teardown = time.monotonic() - t0
    assert ray_objects(kube) == []
    assert kube.get_object("pods", kube.ns, sp.pod_name) is None
    phase(f"stopped (teardown {teardown:.1f} s)")
    # the node has torn every sandbox down (a pod's netns goes once its processes are gone)
    deadline = time.monotonic() + 30
    while not netns_names() <= before:
        assert time.monotonic() < deadline, netns_names() - before
        await asyncio.sleep(0.5)
