"""The Kubernetes part of ``benchmarks.connect_modes_bench`` (its docstring says what it measures).

RaySpawner (driver mode, pods backend, restricted Pod Security) in a fresh namespace of the real
test cluster's **process node** (``testcluster.fixtures.make_kube(..., node="process")``), through
its fault proxy with the hub's ServiceAccount token; each driver is a ``python`` process started
in a pod's sandbox through ``pods/exec`` of the real API server (``testcluster.execclient``), as
``tests/test_e2e_kubernetes.py`` runs its own. The namespace is deleted at the end (the process
node stops whatever is left and removes the pods' network namespaces); a cluster started for
the run is stopped.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from benchmarks.cluster_proc import shared_cluster
from benchmarks.connect_local import parse_result
from rayspawner.registry import hub_process

MODES = ("driver", "client", "head")

# One driver process. argv: mode address tasks. Prints one "RESULT {json}" line.
DRIVER = r"""
import json, os, platform, sys, time
from collections import Counter
t0 = time.perf_counter()
import numpy as np
import ray
import ray.data
import_s = time.perf_counter() - t0
import signal
mode, address, tasks = sys.argv[1], sys.argv[2] or None, int(sys.argv[3])  # None: RAY_ADDRESS from the env
out = {"mode": mode, "import_s": import_s, "errors": {}}

def _alarm(*_):
    raise TimeoutError("step took over 240 s")
signal.signal(signal.SIGALRM, _alarm)

def step(name, fn):
    t = time.perf_counter()
    signal.alarm(240)
    try:
        value = fn()
        out[name + "_s"] = time.perf_counter() - t
        return value
    except BaseException as e:  # noqa: BLE001 - recorded, the next step runs
        out["errors"][name] = (type(e).__name__ + ": " + str(e))[:600]
        out[name + "_s"] = None
        return None
    finally:
        signal.alarm(0)
        print("RESULT " + json.dumps(out), flush=True)  # partial results survive a later hang

step("init", lambda: ray.init(address=address, logging_level="ERROR", log_to_driver=False))
if "init" in out["errors"]:
    print("RESULT " + json.dumps(out), flush=True)
    sys.exit(0)
ctx = ray.get_runtime_context()
out["client"] = ray.util.client.ray.is_connected()
if not out["client"]:
    out["driver_node"] = ctx.get_node_id()
deadline = time.time() + 120
while ray.cluster_resources().get("CPU", 0) < 3 and time.time() < deadline:
    time.sleep(0.5)
out["cpus"] = ray.cluster_resources().get("CPU", 0)
nodes = [n for n in ray.nodes() if n["Alive"]]
out["nodes"] = len(nodes)
notebook = [n["NodeID"] for n in nodes if (n.get("Labels") or {}).get("rayspawner/role") == "notebook"]
out["notebook_node"] = notebook[0] if notebook else None

@ray.remote
def f(x):
    s = 0
    for i in range(20000):
        s += i * i
    return platform.node()

@ray.remote
def size(a):
    return int(a.nbytes), platform.node()

ray.get([f.remote(0), size.remote(np.zeros(8, dtype=np.uint8))])  # export both functions, untimed

hosts = step("smoke", lambda: Counter(ray.get([f.remote(i) for i in range(tasks)])))
if hosts is not None:
    out["smoke_hosts"] = dict(hosts)
big = np.ones(50 * 2**20, dtype=np.uint8)
back = step("put_get", lambda: ray.get(ray.put(big)))
out["put_get_ok"] = back is not None and int(back.nbytes) == big.nbytes
del back
moved = step("put_to_worker", lambda: ray.get(size.remote(ray.put(big))))
if moved is not None:
    out["put_to_worker_bytes"], out["put_to_worker_host"] = moved
total = step("data", lambda: ray.data.range(20000).map_batches(lambda b: {"id": b["id"] * 2}).sum("id"))
out["data_ok"] = total is not None and int(total) == 2 * sum(range(20000))
out["host"] = platform.node()
try:
    ray.shutdown()
except Exception:
    pass
out["done"] = True
print("RESULT " + json.dumps(out), flush=True)
"""

STEPS = ("init", "smoke", "put_get", "put_to_worker", "data")


def stats(values: list[float]) -> dict[str, Any] | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def summarize(samples: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: stats([s.get(k + "_s") for s in samples]) for k in keys}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg} (load {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- k8s part
K8S_PROFILE = [
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


def _k8s_spawner(kube: Any) -> Any:
    """The RaySpawner of the k8s part, as ``tests/test_e2e_kubernetes.py`` builds its own."""
    from kubernetes_asyncio.config import kube_config
    from kubespawner.clients import load_config

    from rayspawner import RaySpawner
    from tests.spawner_fixtures import RESTRICTED_TRAITS

    kube_config.KUBE_CONFIG_DEFAULT_LOCATION = str(kube.kubeconfig_path)  # the hub's ServiceAccount token
    load_config.cache_clear()
    sp = RaySpawner(
        _mock=True,
        user=SimpleNamespace(name="alice", id=1, url="/user/alice/", escaped_name="alice"),
        orm_spawner=SimpleNamespace(name="", server=None, user_options={}, state=None),
        k8s_api_host=kube.url,
        namespace=kube.ns,
        start_timeout=300,
        http_timeout=5,
        image="quay.io/rayspawner/notebook:2.60.0",
        api_token="bench-token",
        oauth_client_id="unused",
        profile_list=K8S_PROFILE,
        ray_backend="pods",
        ray_stop_timeout=90,
        k8s_api_request_retry_timeout=10,
        ray_orphan_sweep_interval=0,
        cmd=["/bin/sh", "-c", "exec sleep 36000", "notebook"],
        # a loaded 2-core machine misses Ray's own start-up windows (raylet 30 s, dashboard agent 15 s)
        ray_extra_env={"RAY_raylet_start_wait_time_s": "180", "RAY_agent_register_timeout_ms": "60000"},
        **RESTRICTED_TRAITS,
    )
    sp.user_options = {"profile": "ray"}
    return sp


async def _k8s_stop(sp: Any, result: dict[str, Any]) -> None:
    from rayspawner import RaySpawner

    try:
        t0 = time.monotonic()
        await asyncio.wait_for(sp.stop(), 150)
        result["stop_s"] = time.monotonic() - t0
    except BaseException as e:  # noqa: BLE001
        result.setdefault("cleanup_errors", []).append(f"stop: {e!r}")
    hub_process.reset()  # as a new hub process: no sweeps, no local backends
    for key, refl in list(RaySpawner.reflectors.items()):
        try:
            await refl.stop()
        except BaseException:  # noqa: BLE001
            pass
        RaySpawner.reflectors.pop(key, None)


async def _k8s_measure(kube: Any, sp: Any, repeats: int, tasks: int, result: dict[str, Any]) -> None:
    from testcluster.execclient import pod_exec
    from testcluster.kubeconfig import ssl_context

    name = sp.ray_session.spec.name
    gcs = sp.ray_session.spec.head_host + ":6379"
    addresses = {"driver": "", "client": f"ray://{sp.ray_session.spec.head_host}:10001", "head": gcs}
    pods = {"driver": sp.pod_name, "client": sp.pod_name, "head": f"{name}-head"}
    containers = {"driver": None, "client": None, "head": "ray-head"}
    result["cluster"] = {
        "name": name,
        "head_host": sp.ray_session.spec.head_host,
        "pods": sorted(p["metadata"]["name"] for p in kube.list_objects("pods", kube.ns)),
    }
    log(f"k8s: spawned in {result['spawn_s']:.1f}s; pods {result['cluster']['pods']}")
    c = kube.cluster.client
    ctx = ssl_context(c.ca, c.cert)  # pods/exec as cluster-admin, as a user's kubectl exec would be allowed

    async def run(mode: str, n_tasks: int, timeout: float = 420) -> dict[str, Any]:
        # driver: "" = a bare ray.init() (RAY_ADDRESS from the notebook container's env)
        argv = ["python", "-c", DRIVER, mode, addresses[mode], str(n_tasks)]
        t = time.monotonic()
        rc, out = await pod_exec(c.server, ctx, kube.ns, pods[mode], argv, container=containers[mode], timeout=timeout)
        r = parse_result(out) or {"mode": mode, "errors": {"process": f"rc={rc}: {out[-1500:]}"}}
        r["process_s"] = time.monotonic() - t
        r["rc"] = rc
        return r

    # warm-up (not reported): workers' first tasks, and the first Ray Client connect to a fresh
    # head, which FIELD-NOTES saw fail ("Starting Ray client server failed")
    warm: list[dict[str, Any]] = []
    for mode in ("head", "driver", "client"):
        w = await run(mode, 50)
        warm.append({k: w.get(k) for k in ("mode", "init_s", "errors", "process_s", "cpus", "nodes")})
        log(f"k8s warm-up {mode}: init {w.get('init_s')} errors {list(w.get('errors', {}))}")
    result["warmup"] = warm

    samples: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    for rep in range(repeats):
        for mode in MODES[rep % 3 :] + MODES[: rep % 3]:
            r = await run(mode, tasks)
            r["rep"], r["load"] = rep, os.getloadavg()[0]
            samples[mode].append(r)
            steps = (f"{k} {r[k + '_s']:.2f}" if r.get(k + "_s") is not None else f"{k} FAIL" for k in STEPS)
            log(f"k8s rep {rep} {mode}: " + " ".join(steps))
    result["samples"] = samples
    result["summary"] = {m: summarize(samples[m], STEPS + ("process",)) for m in MODES}
    result["errors_by_mode"] = {m: sorted({e for s in samples[m] for e in s.get("errors", {})}) for m in MODES}
    result["error_samples"] = {m: {k: v for s in samples[m] for k, v in s.get("errors", {}).items()} for m in MODES}
    result["ratios"] = ratios(samples)


async def k8s_part(repeats: int, tasks: int, result: dict[str, Any]) -> None:
    from rayspawner.backends import detect
    from testcluster.fixtures import drop_kube, make_kube, open_cluster

    workdir = Path(tempfile.mkdtemp(prefix="rscb-k8s-"))
    with shared_cluster() as root:
        kube = make_kube(open_cluster(root), workdir, node="process")
        detect.forget()
        sp = None
        try:
            sp = _k8s_spawner(kube)
            t0 = time.monotonic()
            log("k8s: spawning (head + 2 workers + notebook node)")
            await asyncio.wait_for(sp.start(), 320)
            result["spawn_s"] = time.monotonic() - t0
            result["connect_mode"] = sp.ray_connect_mode
            await _k8s_measure(kube, sp, repeats, tasks, result)
        finally:
            if sp is not None:
                await _k8s_stop(sp, result)
            left = kube.list_objects("pods", kube.ns)
            result["pods_left_after_stop"] = [f"{kube.ns}/{p['metadata']['name']}" for p in left]
            drop_kube(kube)  # the namespace goes: the process node stops what is left and removes its netns
            detect.forget()
            shutil.rmtree(workdir, ignore_errors=True)


def ratios(samples: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Median of medians and the per-repeat ratio (same repeat, adjacent in time)."""
    out: dict[str, Any] = {}
    for a, b in (("driver", "head"), ("client", "head"), ("client", "driver")):
        for k in STEPS:
            ma = stats([s.get(k + "_s") for s in samples[a]])
            mb = stats([s.get(k + "_s") for s in samples[b]])
            per = []
            for sa in samples[a]:
                sb = next((x for x in samples[b] if x["rep"] == sa["rep"]), None)
                if sb and sa.get(k + "_s") and sb.get(k + "_s"):
                    per.append(sa[k + "_s"] / sb[k + "_s"])
            out[f"{k}:{a}/{b}"] = {
                "median_of_medians": ma["median"] / mb["median"] if ma and mb else None,
                "per_repeat": stats(per),
            }
    return out
