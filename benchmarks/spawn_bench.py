"""What a Ray-enabled spawn costs the hub, side by side with plain KubeSpawner.

    python -m benchmarks.spawn_bench [--users 10 100 500] [--reps 2] [--out benchmarks/results/<date>.json]

For every N and repetition, two phases run back to back, alternating which kind
goes first: ``plain`` (kubespawner.KubeSpawner) and ``ray`` (RaySpawner, Ray
profile, 2 workers, pods backend unless ``--backend kuberay``). The phases run on the real test
cluster (``testcluster/``: kube-apiserver, etcd, controller manager and scheduler v1.37.2, the
KubeRay operator, the sim node): the one in ``$RAYSPAWNER_TESTCLUSTER_DIR`` if it is up, else
one started for the whole run and stopped at the end. Each phase gets a fresh namespace with
its own fault proxy and stats endpoint (``benchmarks.cluster_proc``) and a fresh hub-like
process (``benchmarks.hub_worker``), so the hub side's CPU time and RSS are its own. See
benchmarks/README.md for what is simulated and what the columns mean.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.cluster_proc import shared_cluster

ROOT = Path(__file__).resolve().parent.parent
#: base seconds per sim-node stage; every stage of every pod also gets uniform [0, jitter] added
#: (drawn by the hub worker, per pod). 4 stages for a one-container pod (pull, create, start,
#: ready): 2.0 s + 4 × U(0, 0.6) → 2.0–4.4 s, mean 3.2 s, for the notebook, the head and each
#: worker alike. The emulator's 0.5 s "schedule" stage is in "pull": the real kube-scheduler
#: binds a pod in milliseconds.
SIM_DELAYS = {"pull": 1.5, "create": 0.1, "start": 0.2, "ready": 0.2}
JITTER = 0.6
SPAWN_VERBS = ("create", "get", "patch", "update", "delete", "deletecollection")


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def start_cluster_proc(workdir: Path, tag: str) -> tuple[subprocess.Popen, dict[str, Any]]:
    """A fresh namespace + fault proxy + stats endpoint for one phase; its JSON line."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.cluster_proc", "--workdir", str(workdir / tag)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=open(workdir / f"cluster-{tag}.log", "w"),  # noqa: SIM115 - the child keeps it
        text=True,
    )
    line = proc.stdout.readline() if proc.stdout else ""
    if not line:
        proc.wait(30)
        raise RuntimeError(f"cluster_proc did not start; see {workdir / f'cluster-{tag}.log'}")
    return proc, json.loads(line)


def hub_command(kind: str, users: int, args: argparse.Namespace, info: dict[str, Any], out: Path) -> list[str]:
    cmd = [sys.executable, "-m", "benchmarks.hub_worker", "--kind", kind, "--users", str(users)]
    cmd += ["--api", info["url"], "--kubeconfig", info["kubeconfig"], "--namespace", info["namespace"]]
    cmd += ["--stats", info["stats"], "--out", str(out), "--hold", str(args.hold), "--backend", args.backend]
    cmd += ["--sim-delays", json.dumps(args.sim_delays), "--jitter", str(args.jitter)]
    cmd += ["--progress" if args.progress else "--no-progress"]
    return cmd


def run_phase(kind: str, users: int, args: argparse.Namespace, workdir: Path, tag: str) -> dict[str, Any]:
    """One fresh namespace (cluster_proc) + one fresh hub process; returns the hub's JSON plus context."""
    proc, info = start_cluster_proc(workdir, tag)
    try:
        out = workdir / f"hub-{tag}.json"
        hub_cmd = hub_command(kind, users, args, info, out)
        if args.profile_dir:
            hub_cmd += ["--profile", str(Path(args.profile_dir) / f"profile-{tag}.html")]
        load_before = loadavg()
        t = time.monotonic()
        with open(workdir / f"hub-{tag}.log", "w") as log:
            rc = subprocess.run(
                hub_cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=args.phase_timeout
            ).returncode
        if rc != 0:
            raise RuntimeError(f"hub worker failed (rc={rc}); see {workdir / f'hub-{tag}.log'}")
        result = json.loads(out.read_text())
        result.update(tag=tag, wall_s=time.monotonic() - t, load_before=load_before, load_after=loadavg())
        return result
    finally:
        proc.terminate()  # it drops the namespace and waits (≤ 60 s) until it is gone
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# ------------------------------------------------------------------ aggregation
def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    k = (len(v) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def dist(values: list[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "p50": pct(values, 50),
        "p95": pct(values, 95),
        "p99": pct(values, 99),
        "max": max(values) if values else None,
        "mean": statistics.fmean(values) if values else None,
    }


def floors(kind: str, servers: list[dict[str, Any]]) -> tuple[list[float], list[float], list[float]]:
    """The simulated floor (when the pods a spawn waits for were Ready at the API server, from
    the start call), the hub's overhead over it, and (ray) the head's Ready after the notebook's."""
    floor, overhead, head_after_nb = [], [], []
    for s in servers:
        ready = [s.get("nb_ready_wall")] + ([s.get("head_ready_wall")] if kind == "ray" else [])
        if s.get("ok") and all(ready):
            f = max(ready) - s["start_wall"]
            floor.append(f)
            overhead.append(s["spawn_s"] - f)
            if kind == "ray":
                head_after_nb.append(s["head_ready_wall"] - s["nb_ready_wall"])
    return floor, overhead, head_after_nb


def teardowns(kind: str, servers: list[dict[str, Any]]) -> tuple[list[float], int]:
    """stop() called → the server's last object gone (ray: its cluster's; plain: the pod), and how many never went."""
    if kind == "ray":
        teardown = [s["cluster_gone_wall"] - s["stop_wall"] for s in servers if s.get("cluster_gone_wall")]
        return teardown, sum(1 for s in servers if s.get("cluster") and not s.get("cluster_gone_wall"))
    teardown = [s["nb_gone_wall"] - s["stop_wall"] for s in servers if s.get("nb_gone_wall")]
    return teardown, sum(1 for s in servers if not s.get("nb_gone_wall"))


def summarize(phases: list[dict[str, Any]]) -> dict[str, Any]:
    """Pool the repetitions of one (kind, N)."""
    kind, users = phases[0]["kind"], phases[0]["users"]
    servers = [s for p in phases for s in p["servers"]]
    spawn = [s["spawn_s"] for s in servers if s.get("ok")]
    floor, overhead, head_after_nb = floors(kind, servers)
    teardown, not_gone = teardowns(kind, servers)
    n_total = len(servers)
    reqs: Counter = Counter()
    relist: Counter = Counter()
    for p in phases:
        for verb, res, _ns, _name in p["requests"]:
            (reqs if verb in SPAWN_VERBS else relist)[f"{verb} {res}"] += 1
    warm: Counter = Counter(f"{v} {r}" for p in phases for v, r, _n, _m in p["warmup_requests"])
    cpu_total = sum(p["cpu_s"]["total"] for p in phases)
    return {
        "kind": kind,
        "users": users,
        "reps": len(phases),
        "servers": n_total,
        "spawn_s": dist(spawn),
        "floor_s": dist(floor),
        "overhead_s": dist(overhead),
        "head_ready_after_notebook_s": dist(head_after_nb) if head_after_nb else None,
        "stop_s": dist([s["stop_s"] for s in servers if "stop_s" in s]),
        "teardown_s": dist(teardown),
        "teardown_not_done": not_gone,
        "requests_per_server": sum(reqs.values()) / n_total,
        "requests_per_server_by_verb": {k: v / n_total for k, v in sorted(reqs.items())},
        "reflector_requests_during_phase": {k: v / len(phases) for k, v in sorted(relist.items())},
        "warmup_requests": {k: v / len(phases) for k, v in sorted(warm.items())},
        "watches_peak": max(p["watches"]["peak"] for p in phases),
        "cpu_s_per_spawn": cpu_total / n_total,
        "cpu_s_per_spawn_by_rep": [p["cpu_s"]["total"] / p["users"] for p in phases],
        # the whole control plane (API server, etcd, controllers, scheduler, nodes, operator)
        "api_cpu_s_per_spawn": statistics.fmean(p["api_cpu_s"] / p["users"] for p in phases),
        "apiserver_cpu_s_per_spawn": statistics.fmean(
            p["api_cpu_s_by_process"].get("kube-apiserver", 0.0) / p["users"] for p in phases
        ),
        "rss_peak_mb": max(p["rss_mb"]["peak"] for p in phases),
        "rss_growth_mb": max(p["rss_mb"]["peak"] - p["rss_mb"]["baseline"] for p in phases),
        "hub_loop_lag_p99_s": max((p.get("loop_lag_s") or {}).get("p99") or 0 for p in phases),
        "hub_loop_lag_max_s": max((p.get("loop_lag_s") or {}).get("max") or 0 for p in phases),
        "hub_cpu_utilization": [round(p.get("hub_cpu_utilization", 0), 3) for p in phases],
        "errors": sum(len(p["errors"]) for p in phases),
        "error_samples": [e for p in phases for e in p["errors"]][:5],
        "spawn_phase_s": [round(p["spawn_phase_s"], 2) for p in phases],
        "load": [[p["load_before"][0], p["load_after"][0]] for p in phases],
    }


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def compare(plain: dict[str, Any], ray: dict[str, Any]) -> dict[str, Any]:
    return {
        "users": plain["users"],
        "spawn_p50": ratio(ray["spawn_s"]["p50"], plain["spawn_s"]["p50"]),
        "spawn_p95": ratio(ray["spawn_s"]["p95"], plain["spawn_s"]["p95"]),
        "spawn_p99": ratio(ray["spawn_s"]["p99"], plain["spawn_s"]["p99"]),
        "spawn_mean": ratio(ray["spawn_s"]["mean"], plain["spawn_s"]["mean"]),
        # what the spawn ratio would be with zero hub overhead: max(notebook, head) vs notebook
        "floor_mean": ratio(ray["floor_s"]["mean"], plain["floor_s"]["mean"]),
        "cpu_per_spawn": ratio(ray["cpu_s_per_spawn"], plain["cpu_s_per_spawn"]),
        "rss_peak": ratio(ray["rss_peak_mb"], plain["rss_peak_mb"]),
        "rss_growth": ratio(ray["rss_growth_mb"], plain["rss_growth_mb"]),
    }


def compact(phase: dict[str, Any]) -> dict[str, Any]:
    """A phase as stored in the results file: request logs as counts, times rounded."""
    out = dict(phase)
    for key in ("requests", "warmup_requests"):
        if isinstance(out.get(key), list):
            out[key] = dict(sorted(Counter(f"{r[0]} {r[1]}" for r in out[key]).items()))

    def rnd(v: Any) -> Any:
        return round(v, 4) if isinstance(v, float) else v

    out["servers"] = [{k: rnd(v) for k, v in s.items()} for s in out.get("servers", [])]
    return out


# ------------------------------------------------------------------ environment
def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split(":", 1)[1].strip()
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def versions() -> dict[str, str]:
    from importlib.metadata import version

    out = {}
    for dist_name in ("rayspawner", "jupyterhub", "jupyterhub-kubespawner", "kubernetes_asyncio", "aiohttp", "ray"):
        try:
            out[dist_name] = version(dist_name)
        except Exception:  # noqa: BLE001
            out[dist_name] = "?"
    try:
        out["git"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except Exception:  # noqa: BLE001
        out["git"] = "?"
    return out


def fmt(v: float | None, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def table(summary: dict[str, Any]) -> str:
    rows = [
        (
            "N",
            "kind",
            "spawn p50/p95/p99 s",
            "floor mean s",
            "overhead p50/p95 s",
            "req/srv",
            "watch pk",
            "CPU ms/spawn",
            "API CPU ms/spawn",
            "RSS pk MB (+grow)",
            "err",
            "teardown p50/p95/max s",
        )
    ]
    for key in sorted(summary["by_kind"], key=lambda k: (int(k.split("/")[1]), k)):
        s = summary["by_kind"][key]
        sp, ov, td = s["spawn_s"], s["overhead_s"], s["teardown_s"]
        rows.append(
            (
                str(s["users"]),
                s["kind"],
                f"{fmt(sp['p50'])}/{fmt(sp['p95'])}/{fmt(sp['p99'])}",
                fmt(s["floor_s"]["mean"]),
                f"{fmt(ov['p50'], '.3f')}/{fmt(ov['p95'], '.3f')}",
                fmt(s["requests_per_server"], ".1f"),
                str(s["watches_peak"]),
                fmt(s["cpu_s_per_spawn"] * 1000, ".1f"),
                f"{fmt(s['apiserver_cpu_s_per_spawn'] * 1000, '.0f')} ({fmt(s['api_cpu_s_per_spawn'] * 1000, '.0f')})",
                f"{fmt(s['rss_peak_mb'], '.0f')} (+{fmt(s['rss_growth_mb'], '.0f')})",
                str(s["errors"]),
                f"{fmt(td['p50'])}/{fmt(td['p95'])}/{fmt(td['max'])}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    lines.append("ratio ray/plain: N  spawn p50 / p95 / p99 / mean   floor(mean)   CPU/spawn   RSS peak (growth)")
    for c in summary["ratios"]:
        lines.append(
            f"                 {c['users']:<4} {fmt(c['spawn_p50'], '.3f')} / {fmt(c['spawn_p95'], '.3f')} / "
            f"{fmt(c['spawn_p99'], '.3f')} / {fmt(c['spawn_mean'], '.3f')}   {fmt(c['floor_mean'], '.3f')}"
            f"         {fmt(c['cpu_per_spawn'], '.2f')}        {fmt(c['rss_peak'], '.2f')} "
            f"({fmt(c['rss_growth'], '.2f')})"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None, today: str) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.spawn_bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--users", type=int, nargs="+", default=[10, 100, 500])
    ap.add_argument("--reps", type=int, default=2, help="repetitions per N (each runs both kinds)")
    ap.add_argument("--kinds", nargs="+", default=["plain", "ray"], choices=["plain", "ray"])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / f"{today}.json"))
    ap.add_argument("--sim-delays", type=json.loads, default=SIM_DELAYS, help="JSON map of sim-node delays")
    ap.add_argument("--jitter", type=float, default=JITTER)
    ap.add_argument("--backend", choices=["pods", "kuberay"], default="pods", help="the Ray kind's backend")
    ap.add_argument("--hold", type=float, default=1.0, help="seconds between the last start and the stops")
    ap.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="consume progress() for every spawn, as a browser on the spawn page does",
    )
    ap.add_argument("--phase-timeout", type=float, default=900)
    ap.add_argument("--profile-dir", default=None, help="pyinstrument profiles of each hub phase go here")
    ap.add_argument("--keep", action="store_true", help="keep the per-phase logs (printed path)")
    return ap.parse_args(argv)


def run_phases(args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    phases: list[dict[str, Any]] = []
    # one cluster for the whole run (the shared one if up): its start-up is not the bench's business
    with shared_cluster():
        for users in args.users:
            for rep in range(args.reps):
                order = list(args.kinds) if (rep + args.users.index(users)) % 2 == 0 else list(reversed(args.kinds))
                for kind in order:
                    tag = f"{users}-{rep}-{kind}"
                    print(
                        f"[{time.strftime('%H:%M:%S')}] N={users} rep={rep} {kind} (load {loadavg()[0]})",
                        file=sys.stderr,
                        flush=True,
                    )
                    phases.append(run_phase(kind, users, args, workdir, tag))
    return phases


def main(argv: list[str] | None = None) -> int:
    today = dt.date.today().isoformat()
    args = parse_args(argv, today)
    workdir = Path(tempfile.mkdtemp(prefix="spawn-bench-"))
    started = time.time()
    phases = run_phases(args, workdir)
    by_kind: dict[str, Any] = {}
    for users in args.users:
        for kind in args.kinds:
            mine = [p for p in phases if p["users"] == users and p["kind"] == kind]
            by_kind[f"{kind}/{users}"] = summarize(mine)
    ratios = [
        compare(by_kind[f"plain/{n}"], by_kind[f"ray/{n}"])
        for n in args.users
        if f"plain/{n}" in by_kind and f"ray/{n}" in by_kind
    ]
    summary = {
        "date": today,
        "started": dt.datetime.fromtimestamp(started).isoformat(timespec="seconds"),
        "duration_s": round(time.time() - started, 1),
        "command": " ".join(["python -m benchmarks.spawn_bench"] + (argv if argv is not None else sys.argv[1:])),
        "machine": machine(),
        "versions": versions(),
        "config": {
            "sim_delays": args.sim_delays,
            "jitter": args.jitter,
            "hold_s": args.hold,
            "progress": args.progress,
            "reps": args.reps,
            "kinds": args.kinds,
            "ray_profile": {"profile": "ray", "workers": "2"},
            "backend": args.backend,
            "cluster": "testcluster: Kubernetes v1.37.2 control plane, KubeRay operator, sim node",
        },
        "by_kind": by_kind,
        "ratios": ratios,
        "phases": [compact(p) for p in phases],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, separators=(",", ":")))
    print(table(summary))
    print(f"\nwrote {out}" + (f"; phase logs in {workdir}" if args.keep else ""))
    if not args.keep:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
