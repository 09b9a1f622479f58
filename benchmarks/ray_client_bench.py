"""The Ray path in local mode: the smoke test through Ray Client vs. a directly attached driver.

    python -m benchmarks.ray_client_bench [--reps 5] [--tasks 1000] [--out FILE]

Starts one token-auth Ray head on this machine (``ray start --head --block``,
``RAY_AUTH_MODE=token``, its own ports, its own short ``--temp-dir``), then runs
the notebook smoke test in fresh driver processes, alternating:

- ``client``: ``ray.init("ray://127.0.0.1:<client port>")`` (what the notebook's
  injected ``RAY_ADDRESS`` does, token from ``RAY_AUTH_TOKEN``);
- ``direct``: ``ray.init(address="127.0.0.1:<gcs port>")`` (a driver attached to the
  same cluster).

The smoke test: ``@ray.remote def f(x): return x + (platform.node(),)`` with a
little CPU work; ``Counter(ray.get([f.remote(()) for _ in range(1000)]))``. Each
driver reports ``ray.init()`` time and the time of the 1000 tasks separately.
Teardown: SIGTERM, then SIGKILL, of every process carrying this run's
environment marker (``ray stop`` is never used: it stops every Ray on the machine).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
MARKER = "RAYSPAWNER_BENCH_RAY_ID"

DRIVER = r"""
import json, os, platform, sys, time
from collections import Counter
t0 = time.perf_counter()
import ray
t_import = time.perf_counter() - t0
address, tasks, work = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
t0 = time.perf_counter()
ray.init(address=address, logging_level="ERROR", log_to_driver=False)
t_init = time.perf_counter() - t0

@ray.remote
def f(x):
    s = 0
    for i in range(work):
        s += i * i
    return x + (platform.node(),)

ray.get(f.remote(()))  # the function is exported once, outside the timed part
t0 = time.perf_counter()
result = Counter(ray.get([f.remote(()) for _ in range(tasks)]))
t_tasks = time.perf_counter() - t0
assert sum(result.values()) == tasks, result
ray.shutdown()
print("BENCH " + json.dumps({"import_s": t_import, "init_s": t_init, "tasks_s": t_tasks,
                             "result": {str(k): v for k, v in result.items()}}), flush=True)
"""


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def marked(run_id: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["pid"]):
        try:
            if p.environ().get(MARKER) == run_id:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def kill_marked(run_id: str, grace: float = 10.0) -> int:
    procs = marked(run_id)
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    return len(procs)


def start_head(temp_dir: str, env: dict[str, str], num_cpus: int) -> tuple[subprocess.Popen, dict[str, int]]:
    names = [
        "gcs",
        "client",
        "node_manager",
        "object_manager",
        "metrics",
        "runtime_env_agent",
        "dashboard_agent_listen",
        "dashboard_agent_grpc",
        "dashboard",
    ]
    ports = dict(zip(names, free_ports(len(names))))
    lo = 40000 + secrets.randbelow(15000)
    cmd = [
        str(Path(sys.executable).parent / "ray"),
        "start",
        "--head",
        "--block",
        "--disable-usage-stats",
        "--node-ip-address=127.0.0.1",
        f"--num-cpus={num_cpus}",
        f"--temp-dir={temp_dir}",
        f"--port={ports['gcs']}",
        f"--ray-client-server-port={ports['client']}",
        f"--node-manager-port={ports['node_manager']}",
        f"--object-manager-port={ports['object_manager']}",
        f"--metrics-export-port={ports['metrics']}",
        f"--runtime-env-agent-port={ports['runtime_env_agent']}",
        f"--dashboard-agent-listen-port={ports['dashboard_agent_listen']}",
        f"--dashboard-agent-grpc-port={ports['dashboard_agent_grpc']}",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={ports['dashboard']}",
        f"--min-worker-port={lo}",
        f"--max-worker-port={lo + 200}",
        "--object-store-memory=200000000",
    ]
    log = open(os.path.join(temp_dir, "head.out"), "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        text = Path(temp_dir, "head.out").read_text(errors="replace")
        if "Ray runtime started" in text:
            return proc, ports
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited:\n{text[-2000:]}")
        time.sleep(0.5)
    raise RuntimeError("ray start did not report the head up within 120 s")


def run_driver(address: str, env: dict[str, str], tasks: int, work: int, timeout: float = 300) -> dict[str, Any]:
    t0 = time.perf_counter()
    p = subprocess.run(
        [sys.executable, "-c", DRIVER, address, str(tasks), str(work)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    wall = time.perf_counter() - t0
    line = next((ln for ln in p.stdout.splitlines() if ln.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"driver failed (rc={p.returncode}): {(p.stderr or p.stdout)[-1500:]}")
    out = json.loads(line[6:])
    out["process_s"] = wall
    return out


def stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.ray_client_bench")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--work", type=int, default=20000, help="loop iterations of CPU work per task (~1 ms)")
    ap.add_argument("--num-cpus", type=int, default=2)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)

    run_id = secrets.token_hex(8)
    token = secrets.token_hex(32)
    temp_dir = tempfile.mkdtemp(prefix="rcb-", dir="/tmp")
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env = {**base, MARKER: run_id, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "RAY_USAGE_STATS_ENABLED": "0"}
    samples: dict[str, list[dict[str, Any]]] = {"client": [], "direct": []}
    errors: list[str] = []
    t_start = time.time()
    try:
        head, ports = start_head(temp_dir, env, a.num_cpus)
        addresses = {"client": f"ray://127.0.0.1:{ports['client']}", "direct": f"127.0.0.1:{ports['gcs']}"}
        # warm-up: the first Ray Client connect to a fresh head may fail; the first tasks start workers
        for attempt in range(5):
            try:
                run_driver(addresses["client"], env, 50, a.work, timeout=120)
                break
            except Exception as e:  # noqa: BLE001
                errors.append(f"warm-up {attempt}: {str(e)[-300:]}")
                time.sleep(2)
        run_driver(addresses["direct"], env, 50, a.work, timeout=120)
        for rep in range(a.reps):
            for mode in ("client", "direct") if rep % 2 == 0 else ("direct", "client"):
                try:
                    r = run_driver(addresses[mode], env, a.tasks, a.work)
                    r["rep"] = rep
                    samples[mode].append(r)
                    print(
                        f"rep {rep} {mode}: init {r['init_s']:.2f}s tasks {r['tasks_s']:.2f}s "
                        f"(load {os.getloadavg()[0]:.1f})",
                        file=sys.stderr,
                        flush=True,
                    )
                except Exception as e:  # noqa: BLE001
                    errors.append(f"rep {rep} {mode}: {str(e)[-500:]}")
    finally:
        killed = kill_marked(run_id)
        subprocess.run(["rm", "-rf", temp_dir], check=False)

    summary: dict[str, Any] = {
        "tasks": a.tasks,
        "work": a.work,
        "num_cpus": a.num_cpus,
        "reps": a.reps,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t_start)),
        "processes_killed_at_teardown": killed,
        "errors": errors,
    }
    for mode, rs in samples.items():
        if rs:
            summary[mode] = {k: stats([r[k] for r in rs]) for k in ("init_s", "tasks_s", "process_s")}
            summary[mode]["samples"] = rs
    if samples["client"] and samples["direct"]:
        per_rep = {}
        for r in samples["client"]:
            d = next((x for x in samples["direct"] if x["rep"] == r["rep"]), None)
            if d:
                per_rep[r["rep"]] = r["tasks_s"] / d["tasks_s"]
        summary["ratio_tasks_client_over_direct"] = {
            "median_of_medians": summary["client"]["tasks_s"]["median"] / summary["direct"]["tasks_s"]["median"],
            "per_rep": stats(list(per_rep.values())) if per_rep else None,
        }
        summary["ratio_init_client_over_direct"] = (
            summary["client"]["init_s"]["median"] / summary["direct"]["init_s"]["median"]
        )
    print(json.dumps({k: v for k, v in summary.items() if k not in ("client", "direct")}, indent=1))
    for mode in ("client", "direct"):
        if mode in summary:
            s = summary[mode]
            print(
                f"{mode:7s} init {s['init_s']['median']:.2f}s [{s['init_s']['min']:.2f}-{s['init_s']['max']:.2f}]  "
                f"1000 tasks {s['tasks_s']['median']:.2f}s [{s['tasks_s']['min']:.2f}-{s['tasks_s']['max']:.2f}]"
            )
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(summary, indent=1))
    return 0 if samples["client"] and samples["direct"] else 1


if __name__ == "__main__":
    sys.exit(main())
