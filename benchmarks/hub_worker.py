"""One measured phase: a hub-like process spawning and stopping N servers concurrently.

    python -m benchmarks.hub_worker --kind plain|ray --users N --api URL --kubeconfig PATH
                                    --namespace NS --stats URL --out FILE [--progress] [--hold S]
                                    [--sim-delays JSON] [--jitter J] [--backend pods|kuberay]

One event loop, one process, spawner objects built as the tests build them
(``_mock`` hub, a stand-in user per server) and the kubespawner reflectors shared
class-wide, as in a real hub. ``--api`` is the fault proxy of ``benchmarks.cluster_proc``
in front of the real test cluster's API server, ``--kubeconfig`` the hub's own (its
ServiceAccount token), ``--namespace`` the namespace made for this phase. Spawners carry
``RESTRICTED_TRAITS`` (the namespace enforces restricted Pod Security). ``plain`` is an
unmodified ``kubespawner.KubeSpawner``; ``ray`` is ``rayspawner.RaySpawner`` with the Ray
profile and 2 workers (``--backend``, default pods). Both kinds import both packages so the
baseline RSS is the same.

Sim-node delays are per pod (annotation ``testcluster.rayspawner.test/sim-delays``, ``extra_annotations`` for the
notebook pod, ``ray_extra_annotations`` for a cluster's Ray pods): each pod's stages get the
base delays plus uniform [0, jitter] each, drawn here (the shared node has no jitter of its own).

Sequence: warm-up (reflectors, backend detection, the first orphan sweep) → reset
the stats (request log, watch peak, CPU baseline) → all N ``start()`` concurrently (each with a
``progress()`` consumer when ``--progress``, like a browser on the spawn page) →
hold → all N ``stop()`` concurrently → wait until the watch reports every
server's objects gone → read the stats → write JSON (raw samples; the
orchestrator aggregates).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import resource
import sys
import time
import traceback
import urllib.request
from types import SimpleNamespace
from typing import Any

from testcluster.node.kubelet_sim import SIM_DELAYS

NOTEBOOK_IMAGE = "quay.io/rayspawner/notebook:2.60.0"
RAY_OPTIONS = {"profile": "ray", "workers": "2"}


def _http(url: str, method: str = "GET") -> dict[str, Any]:
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _user(name: str, uid: int) -> SimpleNamespace:
    return SimpleNamespace(name=name, id=uid, url=f"/user/{name}/", escaped_name=name)


def sim_delays(base: dict[str, float], jitter: float, rng: random.Random, once: tuple[str, ...] = ()) -> str:
    """One pod's ``testcluster.rayspawner.test/sim-delays`` value ("pull=1.234,start=0.25"; no braces: KubeSpawner
    formats annotation values). ``once``: stages the sim node runs twice for this pod (a native
    sidecar of the same image) but a kubelet pays once; each of the two gets half."""
    parts = []
    for stage, d in base.items():
        v = d + (rng.uniform(0, jitter) if jitter else 0.0)
        parts.append(f"{stage}={v / 2 if stage in once else v:.3f}")
    return ",".join(parts)


def spawner_factory(a: argparse.Namespace) -> tuple[Any, Any]:
    """The spawner class and a ``make(i, prefix)`` building one spawner per stand-in user."""
    from kubespawner import KubeSpawner

    from rayspawner import RaySpawner
    from tests.spawner_fixtures import PROFILES, RESTRICTED_TRAITS

    common: dict[str, Any] = dict(
        k8s_api_host=a.api,
        namespace=a.namespace,
        start_timeout=a.start_timeout,
        http_timeout=5,
        image=NOTEBOOK_IMAGE,
        api_token="bench-token",
        oauth_client_id="unused",
        **RESTRICTED_TRAITS,
    )
    if a.kind == "ray":
        cls: Any = RaySpawner
        common.update(profile_list=PROFILES, ray_stop_timeout=30, ray_backend=a.backend)  # the spawner's default sizes
    else:
        cls = KubeSpawner
    rng = random.Random(a.seed)
    # driver mode: the notebook pod has the Ray node sidecar (same image) before its container
    twice = ("pull", "create") if a.kind == "ray" else ()

    def make(i: int, prefix: str = "u") -> Any:
        name = f"{prefix}{i:04d}"
        orm = SimpleNamespace(name="", server=None, user_options={}, state=None)
        traits = dict(common, extra_annotations={SIM_DELAYS: sim_delays(a.sim_delays, a.jitter, rng, twice)})
        if a.kind == "ray":
            traits["ray_extra_annotations"] = {SIM_DELAYS: sim_delays(a.sim_delays, a.jitter, rng)}
        sp = cls(_mock=True, user=_user(name, i + 1), orm_spawner=orm, **traits)
        if a.kind == "ray":
            sp.user_options = dict(RAY_OPTIONS)
        return sp

    return cls, make


class Sampler:
    """Peak RSS (every 0.25 s) and event-loop lag (how late a 50 ms sleep wakes up: is the
    hub's event loop itself the bottleneck?) while the phase runs."""

    def __init__(self) -> None:
        self.rss0 = self.rss_peak = _rss_mb()
        self.lags: list[float] = []
        self._stop = asyncio.Event()
        self._tasks = [asyncio.ensure_future(self._rss()), asyncio.ensure_future(self._lag())]

    async def _rss(self) -> None:
        while not self._stop.is_set():
            self.rss_peak = max(self.rss_peak, _rss_mb())
            try:
                await asyncio.wait_for(self._stop.wait(), 0.25)
            except asyncio.TimeoutError:
                pass

    async def _lag(self) -> None:
        while not self._stop.is_set():
            t = time.monotonic()
            await asyncio.sleep(0.05)
            self.lags.append(time.monotonic() - t - 0.05)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        self.lags.sort()
        self.rss_peak = max(self.rss_peak, _rss_mb())

    def report(self) -> dict[str, Any]:
        lags = self.lags
        return {
            "rss_mb": {
                "baseline": self.rss0,
                "peak": self.rss_peak,
                "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            },
            "loop_lag_s": {
                "p50": lags[len(lags) // 2] if lags else None,
                "p99": lags[int(len(lags) * 0.99)] if lags else None,
                "max": lags[-1] if lags else None,
            },
        }


async def consume_progress(sp: Any, r: dict[str, Any], errors: list[str]) -> None:
    n = 0
    try:
        async for _ in sp.progress():
            n += 1
    except Exception as e:  # noqa: BLE001
        errors.append(f"progress {sp.user.name}: {type(e).__name__}: {e}")
    r["progress_events"] = n


async def spawn(a: argparse.Namespace, sp: Any, r: dict[str, Any], errors: list[str]) -> None:
    r["start_wall"] = time.time()
    t0 = time.monotonic()
    try:
        fut = sp.start()
        consumer = asyncio.ensure_future(consume_progress(sp, r, errors)) if a.progress else None
        await asyncio.wait_for(fut, a.start_timeout + 30)
        r["spawn_s"] = time.monotonic() - t0
        r["ok"] = True
        if consumer:
            await asyncio.wait_for(consumer, 30)
    except Exception as e:  # noqa: BLE001
        r["ok"] = False
        r["spawn_s"] = time.monotonic() - t0
        errors.append(f"start {sp.user.name}: {type(e).__name__}: {e}")
        if len(errors) < 3:
            traceback.print_exc()
    r["pod"] = sp.pod_name
    r["cluster"] = sp.ray_session.spec.name if a.kind == "ray" and sp.ray_session.spec else None


async def stop(a: argparse.Namespace, sp: Any, r: dict[str, Any], errors: list[str]) -> None:
    r["stop_wall"] = time.time()
    t0 = time.monotonic()
    try:
        await asyncio.wait_for(sp.stop(), a.start_timeout + 30)
    except Exception as e:  # noqa: BLE001
        errors.append(f"stop {sp.user.name}: {type(e).__name__}: {e}")
    r["stop_s"] = time.monotonic() - t0


async def wait_gone(stats_url: str, results: list[dict[str, Any]]) -> dict[str, Any]:
    """The stats once the watch has seen every server's objects go (at most 60 s), with each
    server's pod and cluster times copied into its result."""
    deadline = time.monotonic() + 60
    while True:
        stats = _http(stats_url)
        pods_gone = all(r.get("pod") in stats["pod_gone"] for r in results)
        clusters_gone = all(not r.get("cluster") or r["cluster"] in stats["cluster_gone"] for r in results)
        if (pods_gone and clusters_gone) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    for r in results:
        r["nb_ready_wall"] = stats["pod_ready"].get(r.get("pod") or "")
        r["nb_gone_wall"] = stats["pod_gone"].get(r.get("pod") or "")
        if r.get("cluster"):
            r["head_ready_wall"] = stats["pod_ready"].get(f"{r['cluster']}-head")
            r["cluster_gone_wall"] = stats["cluster_gone"].get(r["cluster"])
            r["cluster_left"] = stats["cluster_live"].get(r["cluster"], 0)
    return stats


async def run(a: argparse.Namespace) -> dict[str, Any]:
    from rayspawner.registry import hub_process

    cls, make = spawner_factory(a)
    # ---- warm-up: one-off reflector list/watch starts, backend detection, first sweep
    warm = make(0, prefix="warmup")
    t = time.monotonic()
    await warm._start_watching_pods()
    await warm._start_watching_events()
    if a.kind == "ray":
        await warm.load_user_options()  # discovery, ray-pods reflector, orphan sweeper (first sweep now)
        await asyncio.sleep(1.0)
    warmup_s = time.monotonic() - t
    warm_stats = _http(a.stats)
    _http(a.stats + "/reset", "POST")

    spawners = [make(i) for i in range(a.users)]
    sampler = Sampler()
    cpu0, wall0 = _cpu(), time.monotonic()
    results: list[dict[str, Any]] = [{"user": sp.user.name} for sp in spawners]
    errors: list[str] = []
    await asyncio.gather(*(spawn(a, sp, r, errors) for sp, r in zip(spawners, results)))
    spawn_phase_s, cpu_spawn = time.monotonic() - wall0, _cpu() - cpu0
    await asyncio.sleep(a.hold)
    cpu1, t_stop = _cpu(), time.monotonic()
    await asyncio.gather(*(stop(a, sp, r, errors) for sp, r in zip(spawners, results)))
    stop_phase_s, cpu_stop = time.monotonic() - t_stop, _cpu() - cpu1
    cpu_total, busy_wall = _cpu() - cpu0, time.monotonic() - wall0
    await sampler.stop()
    stats = await wait_gone(a.stats, results)

    # the reflectors and the sweeper would keep running; stop them so the process exits
    hub_process.reset()
    for refl in list(cls.reflectors.values()):
        await refl.stop()

    return {
        "kind": a.kind,
        "users": a.users,
        "progress": a.progress,
        "hold_s": a.hold,
        "warmup_s": warmup_s,
        "warmup_requests": warm_stats["requests"],
        "requests": stats["requests"],
        "watches": stats["watches"],
        "api_cpu_s": stats["cpu"],
        "api_cpu_s_by_process": stats["cpu_by_process"],
        "spawn_phase_s": spawn_phase_s,
        "stop_phase_s": stop_phase_s,
        "cpu_s": {"spawn": cpu_spawn, "stop": cpu_stop, "total": cpu_total},
        **sampler.report(),
        "hub_cpu_utilization": cpu_total / busy_wall,
        "errors": errors,
        "servers": results,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.hub_worker")
    ap.add_argument("--kind", choices=["plain", "ray"], required=True)
    ap.add_argument("--users", type=int, required=True)
    ap.add_argument("--api", required=True)
    ap.add_argument("--kubeconfig", required=True, help="the hub's kubeconfig (ServiceAccount token)")
    ap.add_argument("--namespace", required=True)
    ap.add_argument("--stats", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--hold", type=float, default=1.0)
    ap.add_argument("--start-timeout", type=float, default=120.0)
    ap.add_argument("--sim-delays", type=json.loads, default={}, help='JSON: base s per stage, {"pull": 1.5}')
    ap.add_argument("--jitter", type=float, default=0.0, help="uniform [0, J] s added to each stage of each pod")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--backend", choices=["pods", "kuberay"], default="pods")
    ap.add_argument("--profile", default=None, help="write a pyinstrument HTML profile of the hub side here")
    a = ap.parse_args(argv)
    # kubespawner's load_config reads the default kubeconfig (then overrides the host)
    os.environ["KUBECONFIG"] = a.kubeconfig
    from kubernetes_asyncio.config import kube_config

    kube_config.KUBE_CONFIG_DEFAULT_LOCATION = a.kubeconfig
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # a hub at INFO logs a few lines per spawn; WARNING keeps the bench about the spawners
    logging.getLogger("traitlets").setLevel(logging.WARNING)
    profiler = None
    if a.profile:
        from pyinstrument import Profiler

        profiler = Profiler(async_mode="disabled")
        profiler.start()
    out = asyncio.run(run(a))
    if profiler:
        profiler.stop()
        with open(a.profile, "w") as f:
            f.write(profiler.output_html())
        profiler.last_session.save(a.profile + ".pyisession")
        with open(a.profile + ".txt", "w") as f:
            f.write(profiler.output_text(unicode=False, color=False, show_all=False))
    with open(a.out, "w") as f:
        json.dump(out, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
