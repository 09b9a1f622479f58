"""The simulated kubelet: pod phases, conditions, container statuses and events, no processes.

Behaviour is steered by delays (``schedule`` is the scheduler's; ``pull``, ``create``,
``start``, ``ready``, ``init``, ``restart`` are this kubelet's) and by pod annotations
understood only by the emulator (see README.md):

- ``testcluster.rayspawner.test/image-pull: fail``   -> ErrImagePull, then ImagePullBackOff (Warning events)
- ``testcluster.rayspawner.test/exit-after: "<s>"``  -> containers terminate after <s> seconds of running
- ``testcluster.rayspawner.test/exit-code: "<n>"``   -> with that exit code (default 0); restartPolicy honoured
- ``testcluster.rayspawner.test/not-ready: "true"``  -> containers run but never become ready
- ``testcluster.rayspawner.test/not-ready-containers: "a,b"`` -> those sidecar init containers
  run but never become ready
- ``testcluster.rayspawner.test/sim-delays: "pull=1.0,start=0.2"`` -> this pod's delays (seconds), over the node's

Native sidecars (init containers with ``restartPolicy: Always``) are reported started,
ready and running as soon as they start; the next init container follows at once; they
count toward the pod's Ready condition and are terminated when the pod completes.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets as pysecrets
from typing import Any

from .kubelet_api import PodContext
from .containers import now as now_iso
from .kubelet_api import HOST_IP

log = logging.getLogger("testcluster.node.sim")

DEFAULT_DELAYS = {"pull": 0.02, "create": 0.0, "start": 0.02, "ready": 0.0, "init": 0.02, "restart": 0.05}
IMAGE_PULL = "testcluster.rayspawner.test/image-pull"
EXIT_AFTER = "testcluster.rayspawner.test/exit-after"
EXIT_CODE = "testcluster.rayspawner.test/exit-code"
NOT_READY = "testcluster.rayspawner.test/not-ready"
NOT_READY_CONTAINERS = "testcluster.rayspawner.test/not-ready-containers"
SIM_DELAYS = "testcluster.rayspawner.test/sim-delays"


def _cid() -> str:
    return "containerd://" + pysecrets.token_hex(32)


class _PodState:
    def __init__(self, pod: dict[str, Any], ctx: PodContext, ip: str) -> None:
        self.pod = pod
        self.ctx = ctx
        self.ip = ip
        self.sandbox = False
        self.phase = "Pending"
        self.start_time = now_iso()
        spec = pod.get("spec") or {}
        self.init = {c["name"]: _waiting(c, "PodInitializing") for c in spec.get("initContainers") or []}
        # Native sidecars (Kubernetes >= 1.29): init containers with restartPolicy Always keep running.
        self.sidecars = [c["name"] for c in spec.get("initContainers") or [] if c.get("restartPolicy") == "Always"]
        self.main = {c["name"]: _waiting(c, "ContainerCreating") for c in spec.get("containers") or []}
        self.initialized = not self.init
        self.reason: str | None = None
        # this pod's own delays ("pull=1.0,start=0.2"), over the node's: one shared node serves every test
        spec_text = (pod["metadata"].get("annotations") or {}).get(SIM_DELAYS, "")
        self.delays = {k.strip(): float(v) for k, _, v in (p.partition("=") for p in spec_text.split(",") if p)}

    def status(self) -> dict[str, Any]:
        ts = now_iso()
        ready = self.phase == "Running" and all(
            s["ready"] for s in [*self.main.values(), *(self.init[n] for n in self.sidecars)]
        )
        done = self.phase in ("Succeeded", "Failed")
        conds = [
            {"type": "Initialized", "status": "True" if self.initialized else "False"},
            {"type": "Ready", "status": "True" if ready else "False"},
            {"type": "ContainersReady", "status": "True" if ready else "False"},
        ]
        for c in conds:
            c.update(lastProbeTime=None, lastTransitionTime=ts)
            if c["status"] == "False" and c["type"] != "Initialized":
                c["reason"] = "PodCompleted" if done else "ContainersNotReady"
                if not done:
                    c["message"] = (
                        "containers with unready status: ["
                        + " ".join(
                            n
                            for n, s in [*self.main.items(), *((n, self.init[n]) for n in self.sidecars)]
                            if not s["ready"]
                        )
                        + "]"
                    )
        st: dict[str, Any] = {
            "phase": self.phase,
            "conditions": conds,
            "hostIP": HOST_IP,
            "hostIPs": [{"ip": HOST_IP}],
            "startTime": self.start_time,
            "containerStatuses": list(self.main.values()),
            "qosClass": "BestEffort",
        }
        if self.init:
            st["initContainerStatuses"] = list(self.init.values())
        if self.sandbox:
            st["podIP"] = self.ip
            st["podIPs"] = [{"ip": self.ip}]
        return st


def _waiting(c: dict[str, Any], reason: str, message: str | None = None) -> dict[str, Any]:
    w: dict[str, Any] = {"reason": reason}
    if message:
        w["message"] = message
    return {
        "name": c["name"],
        "image": c.get("image", ""),
        "imageID": "",
        "ready": False,
        "started": False,
        "restartCount": 0,
        "state": {"waiting": w},
        "lastState": {},
    }


class SimKubelet:
    """Implements :class:`kubelet_api.Kubelet` with timers only."""

    def __init__(self, delays: dict[str, float] | None = None, jitter: float = 0.0) -> None:
        self.delays = {**DEFAULT_DELAYS, **(delays or {})}
        self.jitter = jitter
        self._tasks: dict[str, asyncio.Task] = {}
        self._states: dict[str, _PodState] = {}
        self._next_ip = 0

    def _alloc_ip(self) -> str:
        """Pod IPs of simulated pods are in 127.244.0.0/16: loopback, so a hub that connects
        to a simulated notebook (JupyterHub's wait_up) is refused on this machine at once and
        never sends a packet anywhere else (10.244.x.y would follow the default route)."""
        n = self._next_ip
        self._next_ip += 1
        return f"127.244.{(n // 250) % 250}.{n % 250 + 2}"

    async def _sleep(self, key: str, st: _PodState) -> None:
        d = float(st.delays.get(key, self.delays.get(key, 0.0)))
        if self.jitter:
            d += random.uniform(0, self.jitter)
        await asyncio.sleep(d)

    async def run_pod(self, pod: dict[str, Any], ctx: PodContext) -> None:
        uid = pod["metadata"]["uid"]
        st = _PodState(pod, ctx, self._alloc_ip())
        self._states[uid] = st
        self._tasks[uid] = asyncio.ensure_future(self._drive(st))

    async def kill_pod(self, pod: dict[str, Any], grace_period_seconds: int) -> None:
        uid = pod["metadata"]["uid"]
        task = self._tasks.pop(uid, None)
        st = self._states.pop(uid, None)
        if task is not None:
            task.cancel()
        if st is not None and st.phase == "Running" and grace_period_seconds > 0:
            for name in [*st.main, *reversed(st.sidecars)]:  # sidecars last, in reverse order
                await st.ctx.emit_event("Killing", f"Stopping container {name}")

    async def shutdown(self) -> None:
        for t in self._tasks.values():
            t.cancel()
        self._tasks.clear()
        self._states.clear()

    def pod_logs(self, pod: dict[str, Any], container: str | None) -> str:
        st = self._states.get(pod["metadata"]["uid"])
        if st is None or st.phase == "Pending":
            return ""
        return f"k8semu: simulated log of {pod['metadata']['name']}/{container or ''}\n"

    async def _drive(self, st: _PodState) -> None:
        try:
            await self._drive_inner(st)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("sim kubelet failed on %s/%s", st.ctx.namespace, st.ctx.name)

    async def _push(self, st: _PodState) -> None:
        await st.ctx.update_status(st.status())

    async def _drive_inner(self, st: _PodState) -> None:
        ctx, pod = st.ctx, st.pod
        spec = pod.get("spec") or {}
        ann = pod["metadata"].get("annotations") or {}
        await self._push(st)
        if not await self._mount_volumes(st):
            return
        st.sandbox = True
        if ann.get(IMAGE_PULL) == "fail":
            await self._fail_pull(st)
            return
        for c in spec.get("initContainers") or []:
            await self._pull(st, c)
            await self._wait_config(st, c, st.init)
            await self._sleep("create", st)
            await ctx.emit_event("Created", f"Created container {c['name']}")
            await ctx.emit_event("Started", f"Started container {c['name']}")
            st.init[c["name"]].update(state={"running": {"startedAt": now_iso()}}, started=True, containerID=_cid())
            if c["name"] in st.sidecars:  # started is enough to move on; it keeps running
                unready = ann.get(NOT_READY) == "true" or c["name"] in (ann.get(NOT_READY_CONTAINERS) or "").split(",")
                st.init[c["name"]]["ready"] = not unready
                await self._push(st)
                continue
            await self._push(st)
            await self._sleep("init", st)
            s = st.init[c["name"]]
            s.update(
                state={
                    "terminated": {
                        "exitCode": 0,
                        "reason": "Completed",
                        "startedAt": s["state"]["running"]["startedAt"],
                        "finishedAt": now_iso(),
                        "containerID": s["containerID"],
                    }
                },
                started=False,
                ready=True,
            )
            await self._push(st)
        st.initialized = True
        for c in spec.get("containers") or []:
            await self._pull(st, c)
        for c in spec.get("containers") or []:
            await self._wait_config(st, c, st.main)
        await self._sleep("create", st)
        for c in spec.get("containers") or []:
            await ctx.emit_event("Created", f"Created container {c['name']}")
        await self._sleep("start", st)
        for c in spec.get("containers") or []:
            await ctx.emit_event("Started", f"Started container {c['name']}")
        await self._run_containers(st, ann)

    async def _run_containers(self, st: _PodState, ann: dict[str, str]) -> None:
        spec = st.pod.get("spec") or {}
        while True:
            st.phase = "Running"
            for c in spec.get("containers") or []:
                s = st.main[c["name"]]
                s.update(
                    state={"running": {"startedAt": now_iso()}},
                    started=True,
                    ready=False,
                    containerID=_cid(),
                    imageID=f"docker.io/library/{c.get('image', '')}@sha256:" + "0" * 64,
                )
            await self._push(st)
            if ann.get(NOT_READY) != "true":
                await self._sleep("ready", st)
                for s in st.main.values():
                    s["ready"] = True
                await self._push(st)
            if EXIT_AFTER not in ann:
                return
            await asyncio.sleep(float(ann[EXIT_AFTER]))
            code = int(ann.get(EXIT_CODE, "0"))
            for s in st.main.values():
                started = s["state"].get("running", {}).get("startedAt")
                s.update(
                    ready=False,
                    started=False,
                    state={
                        "terminated": {
                            "exitCode": code,
                            "reason": "Completed" if code == 0 else "Error",
                            "startedAt": started,
                            "finishedAt": now_iso(),
                            "containerID": s.get("containerID"),
                        }
                    },
                )
            policy = spec.get("restartPolicy", "Always")
            if policy == "Always" or (policy == "OnFailure" and code != 0):
                for s in st.main.values():
                    s["lastState"] = s["state"]
                    s["restartCount"] += 1
                    s["state"] = {
                        "waiting": {
                            "reason": "CrashLoopBackOff",
                            "message": f"back-off restarting failed container {s['name']}",
                        }
                    }
                await self._push(st)
                await st.ctx.emit_event("BackOff", "Back-off restarting failed container", "Warning")
                await self._sleep("restart", st)
                continue
            st.phase = "Succeeded" if code == 0 else "Failed"
            for name in st.sidecars:  # stopped once the main containers are done
                s = st.init[name]
                s.update(
                    ready=False,
                    started=False,
                    state={
                        "terminated": {
                            "exitCode": 0,
                            "reason": "Completed",
                            "startedAt": s["state"].get("running", {}).get("startedAt"),
                            "finishedAt": now_iso(),
                            "containerID": s.get("containerID"),
                        }
                    },
                )
            await self._push(st)
            return

    async def _pull(self, st: _PodState, c: dict[str, Any]) -> None:
        image = c.get("image", "")
        await st.ctx.emit_event("Pulling", f'Pulling image "{image}"')
        await self._sleep("pull", st)
        ms = int(float(self.delays.get("pull", 0)) * 1000)
        await st.ctx.emit_event("Pulled", f'Successfully pulled image "{image}" in {ms}ms ({ms}ms including waiting)')

    async def _fail_pull(self, st: _PodState) -> None:
        c = (st.pod["spec"].get("initContainers") or st.pod["spec"]["containers"])[0]
        image = c.get("image", "")
        table = st.init if c["name"] in st.init else st.main
        await st.ctx.emit_event("Pulling", f'Pulling image "{image}"')
        await self._sleep("pull", st)
        msg = (
            f'Failed to pull image "{image}": rpc error: code = NotFound desc = failed to pull and unpack '
            f'image "{image}": not found (simulated by k8semu)'
        )
        await st.ctx.emit_event("Failed", msg, "Warning")
        await st.ctx.emit_event("Failed", "Error: ErrImagePull", "Warning")
        table[c["name"]]["state"] = {"waiting": {"reason": "ErrImagePull", "message": msg}}
        await self._push(st)
        await self._sleep("restart", st)
        await st.ctx.emit_event("BackOff", f'Back-off pulling image "{image}"')
        await st.ctx.emit_event("Failed", "Error: ImagePullBackOff", "Warning")
        table[c["name"]]["state"] = {
            "waiting": {"reason": "ImagePullBackOff", "message": f'Back-off pulling image "{image}"'}
        }
        await self._push(st)

    async def _mount_volumes(self, st: _PodState) -> bool:
        warned = False
        for v in (st.pod.get("spec") or {}).get("volumes") or []:
            sec = v.get("secret")
            if not sec or sec.get("optional"):
                continue
            while await st.ctx.get_secret(sec.get("secretName", "")) is None:
                if not warned:
                    await st.ctx.emit_event(
                        "FailedMount",
                        f'MountVolume.SetUp failed for volume "{v["name"]}" : '
                        f'secret "{sec.get("secretName")}" not found',
                        "Warning",
                    )
                    warned = True
                await asyncio.sleep(0.05)
        return True

    async def _missing_config(self, st: _PodState, c: dict[str, Any]) -> str | None:
        for e in c.get("env") or []:
            vf = e.get("valueFrom") or {}
            for kind, getter in (("secretKeyRef", st.ctx.get_secret), ("configMapKeyRef", st.ctx.get_configmap)):
                ref = vf.get(kind)
                if not ref or ref.get("optional"):
                    continue
                obj = await getter(ref.get("name", ""))
                what = "secret" if kind == "secretKeyRef" else "configmap"
                if obj is None:
                    return f'{what} "{ref.get("name")}" not found'
                data = {**(obj.get("data") or {}), **(obj.get("stringData") or {})}
                if ref.get("key") not in data:
                    return (
                        f"couldn't find key {ref.get('key')} in {'Secret' if what == 'secret' else 'ConfigMap'} "
                        f"{st.ctx.namespace}/{ref.get('name')}"
                    )
        for ef in c.get("envFrom") or []:
            for kind, getter, what in (
                ("secretRef", st.ctx.get_secret, "secret"),
                ("configMapRef", st.ctx.get_configmap, "configmap"),
            ):
                ref = ef.get(kind)
                if ref and not ref.get("optional") and await getter(ref.get("name", "")) is None:
                    return f'{what} "{ref.get("name")}" not found'
        return None

    async def _wait_config(self, st: _PodState, c: dict[str, Any], table: dict[str, dict[str, Any]]) -> None:
        reported = None
        while True:
            missing = await self._missing_config(st, c)
            if missing is None:
                if reported is not None:
                    table[c["name"]]["state"] = {"waiting": {"reason": "ContainerCreating"}}
                return
            if missing != reported:
                table[c["name"]]["state"] = {"waiting": {"reason": "CreateContainerConfigError", "message": missing}}
                await self._push(st)
                await st.ctx.emit_event("Failed", f"Error: {missing}", "Warning")
                reported = missing
            await asyncio.sleep(0.05)
