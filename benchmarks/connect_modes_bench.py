"""Ray Client vs. driver mode vs. a driver on the head node, in one run (issue 13).

    python -m benchmarks.connect_modes_bench [--repeats 3] [--parts k8s local] [--out FILE]

Two parts, both on this machine:

``k8s`` — RaySpawner (driver mode, the default; pods backend, restricted Pod Security) against
the real test cluster (``testcluster/``: the one in ``$RAYSPAWNER_TESTCLUSTER_DIR`` if up, else
one started for the run), in a fresh namespace on its **process node**, through a fault proxy
with the hub's ServiceAccount token: a head (1 CPU), 2 workers (1 CPU each) and the notebook pod
(its ``ray-node`` sidecar: a 0-CPU node of the cluster), each pod real processes in its own
network + PID namespace. Commands run in the pods through ``pods/exec`` of the real API server
(``testcluster.execclient``). One cluster serves three kinds of driver, each a fresh ``python``
process per repeat (order rotated per repeat):

- ``driver``: in the notebook container's sandbox and env, a bare ``ray.init()``
  (``RAY_ADDRESS=<head-svc>:6379``; the driver attaches to the notebook's own node);
- ``client``: same sandbox, ``ray.init("ray://<head-svc>:10001")`` (Ray Client, same head);
- ``head``: in the head container's sandbox and env, ``ray.init(address="<head-svc>:6379")``
  (a driver on the head node itself: the reference).

Each driver process imports ``ray``, ``numpy`` and ``ray.data`` first (not timed), then times
``ray.init()``; waits (untimed) for the 3 CPUs; one warm-up task per remote function
(function export, untimed); then the seed smoke test (1000 tasks of ~1 ms CPU,
``Counter(ray.get([...]))``); a 50 MB ``ray.put`` + ``ray.get``; a 50 MB ``ray.put`` passed
as a task argument (it moves to a worker, which returns its size); the Ray Data pipeline
``ray.data.range(20000).map_batches(lambda b: {"id": b["id"] * 2}).sum("id")``. A step
that raises is recorded (``errors``) and the next one runs: Ray Data over Ray Client is
expected to fail.

``local`` — a real JupyterHub with ``jupyterhub_config/local.py`` (``LocalRaySpawner``,
processes on this host), one hub per connect mode (``RAYSPAWNER_CONNECT_MODE``), and per
repeat a fresh server: **click to first result** = wall time from the REST API spawn request
(``POST /hub/api/users/<u>/server`` with ``{"profile": "ray"}``, its default options) to the
moment a **real IPython kernel** in that server (started through the single-user server's
``/api/kernels``, driven over its websocket) has finished ``import ray; ray.init();
ray.get(ray.remote(f).remote())``. Broken down into spawn (POST → server ready), kernel
start, import, ``ray.init()`` and the first ``ray.get``.

Cleanup, also on failure or SIGTERM/SIGINT: the server is stopped through the spawner, the
namespace is deleted (the process node stops every pod's processes and removes its netns and
veth; a cluster started for the run is stopped, bridge included); the hub is
stopped with SIGTERM (``cleanup_servers``), then every process carrying this run's temp root,
state dir or marker in its environment is killed. ``ray stop`` is never used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from benchmarks.connect_k8s import DRIVER, MODES, STEPS, k8s_part, log, ratios, stats, summarize  # noqa: F401
from benchmarks.connect_local import ROOT, LocalHub, parse_result, run_in_kernel  # noqa: F401 - re-exported

# Executed in a real kernel (local part): what a user does first.
FIRST_RESULT = r"""
import json as _json, time as _time
_t0 = _time.perf_counter()
import ray
_t1 = _time.perf_counter()
ray.init()
_t2 = _time.perf_counter()
_v = ray.get(ray.remote(lambda: 42).remote())
_t3 = _time.perf_counter()
print("FIRST " + _json.dumps({"import_s": _t1 - _t0, "init_s": _t2 - _t1, "first_get_s": _t3 - _t2, "value": _v,
                              "client": ray.util.client.ray.is_connected(),
                              "ray_address": __import__("os").environ.get("RAY_ADDRESS")}))
"""


# ----------------------------------------------------------------------------- helpers
class Interrupted(BaseException):
    pass


def _raise_interrupted(signum: int, _frame: Any) -> None:
    raise Interrupted(f"signal {signum}")


def machine() -> dict[str, Any]:
    cpu = None
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), None)
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "mem_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def versions() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mod in ("ray", "jupyterhub", "kubespawner", "jupyter_server", "rayspawner"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            out[mod] = None
    try:
        out["git"] = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
        out["git_dirty_paths"] = len(
            subprocess.run(
                ["git", "-C", str(ROOT), "status", "--short"], capture_output=True, text=True, timeout=10, check=False
            ).stdout.splitlines()
        )
    except Exception:  # noqa: BLE001
        pass
    return out


# ----------------------------------------------------------------------------- local part
def _local(repeats: int, modes: list[str], run_id: str, result: dict[str, Any]) -> None:
    for mode in modes:
        workdir = Path(tempfile.mkdtemp(prefix=f"rscb-hub-{mode}-"))
        hub = LocalHub(workdir, mode, run_id)
        samples: list[dict[str, Any]] = []
        errors: list[str] = []
        try:
            hub.start()
            user = "bench"
            token = hub.user_token(user)
            for rep in range(repeats):
                s: dict[str, Any] = {"rep": rep}
                try:
                    t0 = time.monotonic()
                    r = hub.api("POST", f"/users/{user}/server", token=token, json={"profile": "ray"})
                    if r.status_code not in (201, 202):
                        raise RuntimeError(f"spawn: {r.status_code} {r.text[:300]}")
                    while True:
                        model = hub.server(user)
                        if model and model.get("ready"):
                            break
                        if not model or not model.get("pending"):
                            raise RuntimeError(f"spawn failed: {model}\n{hub.log_tail()}")
                        if time.monotonic() - t0 > 400:
                            raise RuntimeError("spawn did not finish in 400 s")
                        time.sleep(0.1)
                    s["spawn_s"] = time.monotonic() - t0
                    first, s["kernel_start_s"] = run_in_kernel(hub, user, token, FIRST_RESULT)
                    s["click_to_first_result_s"] = time.monotonic() - t0
                    s.update({k: first[k] for k in ("import_s", "init_s", "first_get_s", "client", "ray_address")})
                    s["ray_address"] = (s["ray_address"] or "").rsplit(":", 1)[0] + ":<port>"  # no ports in results
                    s["load"] = os.getloadavg()[0]
                    log(
                        f"local {mode} rep {rep}: click→first result {s['click_to_first_result_s']:.1f}s "
                        f"(spawn {s['spawn_s']:.1f}, kernel {s['kernel_start_s']:.1f}, import {s['import_s']:.1f}, "
                        f"init {s['init_s']:.2f}, get {s['first_get_s']:.2f})"
                    )
                    samples.append(s)
                except Exception as e:  # noqa: BLE001
                    errors.append(f"rep {rep}: {str(e)[-800:]}")
                    log(f"local {mode} rep {rep} FAILED: {str(e)[-300:]}")
                finally:
                    try:
                        s["stop_s"] = hub.stop_server(user)
                    except Exception as e:  # noqa: BLE001
                        errors.append(f"stop rep {rep}: {str(e)[-300:]}")
        except Exception as e:  # noqa: BLE001
            errors.append(f"hub: {str(e)[-800:]}")
        finally:
            killed = hub.stop()
            shutil.rmtree(workdir, ignore_errors=True)
        result[mode] = {
            "samples": samples,
            "errors": errors,
            "processes_killed_at_teardown": killed,
            "summary": summarize(
                samples, ("click_to_first_result", "spawn", "kernel_start", "import", "init", "first_get", "stop")
            ),
        }


# ----------------------------------------------------------------------------- report
def targets(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    k8s = data.get("k8s", {}).get("summary")
    if k8s:
        init = (k8s["driver"].get("init") or {}).get("median")
        out["driver_init_median_le_0.2s"] = {"value": init, "met": init is not None and init <= 0.2}
        r = data["k8s"]["ratios"]["smoke:driver/head"]
        v = r["median_of_medians"]
        out["smoke_driver_over_head_le_1.1"] = {
            "value": v,
            "per_repeat": r["per_repeat"],
            "met": v is not None and v <= 1.1,
        }
    return out


def table(data: dict[str, Any]) -> str:
    lines = []
    k8s = data.get("k8s", {})
    if "summary" in k8s:
        lines.append(
            "k8s (real API server, process node, one cluster: head 1 CPU + 2 workers 1 CPU + notebook 0-CPU node), "
            f"median [min-max] s over {data['config']['repeats']} repeats"
        )
        lines.append(f"{'':8s} " + " ".join(f"{k:>22s}" for k in STEPS))
        for m in MODES:
            cells = []
            for k in STEPS:
                s = k8s["summary"][m].get(k)
                cells.append(f"{s['median']:.2f} [{s['min']:.2f}-{s['max']:.2f}]" if s else "FAILED")
            lines.append(f"{m:8s} " + " ".join(f"{c:>22s}" for c in cells))
        for m, errs in k8s.get("error_samples", {}).items():
            for k, v in errs.items():
                lines.append(f"  {m} {k} error: {v[:160]}")
    for mode, loc in data.get("local", {}).items():
        s = loc.get("summary", {}).get("click_to_first_result")
        if s:
            parts = " ".join(
                f"{k} {loc['summary'][k]['median']:.2f}"
                for k in ("spawn", "kernel_start", "import", "init", "first_get")
                if loc["summary"].get(k)
            )
            lines.append(
                f"local {mode}: click→first result median {s['median']:.1f}s [{s['min']:.1f}-{s['max']:.1f}] ({parts})"
            )
        for e in loc.get("errors", []):
            lines.append(f"local {mode} error: {e[:200]}")
    for k, v in data.get("targets", {}).items():
        lines.append(f"target {k}: {v['value']} -> {'MET' if v['met'] else 'MISSED'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.connect_modes_bench")
    ap.add_argument(
        "--repeats", type=int, default=3, help="fresh driver processes per mode (k8s) / spawns per mode (local)"
    )
    ap.add_argument("--parts", nargs="+", choices=("k8s", "local"), default=["k8s", "local"])
    ap.add_argument("--local-modes", nargs="+", choices=("driver", "client"), default=["driver", "client"])
    ap.add_argument(
        "--local-repeats", type=int, default=None, help="spawns per mode in the local part (default: --repeats)"
    )
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--out", default=None, help="JSON (default benchmarks/results/<date>-connect-modes.json)")
    a = ap.parse_args(argv)
    out = Path(a.out or ROOT / "benchmarks" / "results" / f"{time.strftime('%Y-%m-%d')}-connect-modes.json")
    if "k8s" in a.parts and os.geteuid() != 0:
        ap.error("the k8s part needs root (network namespaces)")

    run_id = secrets.token_hex(8)
    data: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": "python -m benchmarks.connect_modes_bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(),
        "versions": versions(),
        "config": {
            "repeats": a.repeats,
            "local_repeats": a.local_repeats or a.repeats,
            "tasks": a.tasks,
            "parts": a.parts,
            "local_modes": a.local_modes,
        },
        "load_start": os.getloadavg(),
    }
    old = {s: signal.signal(s, _raise_interrupted) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        if "k8s" in a.parts:
            data["k8s"] = {}
            try:
                asyncio.run(k8s_part(a.repeats, a.tasks, data["k8s"]))
            except Exception as e:  # noqa: BLE001
                data["k8s"]["failed"] = f"{type(e).__name__}: {str(e)[-1500:]}"
                log(f"k8s part failed: {data['k8s']['failed'][-500:]}")
        if "local" in a.parts:
            data["local"] = {}
            _local(a.local_repeats or a.repeats, a.local_modes, run_id, data["local"])
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        data["load_end"] = os.getloadavg()
        data["targets"] = targets(data) if "k8s" in data and "ratios" in data["k8s"] else {}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data, indent=1, default=str))
    print(table(data))
    print(f"wrote {out}")
    ok = "summary" in data.get("k8s", {"summary": 1}) and all(
        loc.get("samples") for loc in data.get("local", {}).values()
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
