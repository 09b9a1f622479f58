"""A kubelet that runs each pod's containers as real local processes.

``ProcessKubelet(root_dir=None, network="auto", time_scale=0.25, max_grace_seconds=10,
min_probe_timeout=5, backoff_base=0.5, backoff_max=10, hosts_refresh_interval=0.5,
node_name="k8semu-node", keep_dirs=False)`` implements :class:`kubelet_api.Kubelet`.

- Containers: ``command`` + ``args`` (``$(VAR)`` expanded) with the resolved ``env``/``envFrom``
  (``value``, ``secretKeyRef``, ``configMapKeyRef``, ``fieldRef``, ``resourceFieldRef``) and
  ``workingDir``. Images are ignored: this machine's Python environment is used
  (``dirname(sys.executable)`` first on ``PATH``). A missing Secret/ConfigMap/key leaves the
  container waiting with ``CreateContainerConfigError``, retried. initContainers run first, in order.
- Native sidecars (``initContainers`` entries with ``restartPolicy: Always``, Kubernetes >= 1.29):
  started in their turn; the next init container follows once the sidecar has started (and its
  startupProbe, if any, succeeded). They share the pod's sandbox, restart whenever they exit
  (whatever the pod's restartPolicy), feed their readiness into the pod's Ready condition, and
  are stopped after the main containers (on deletion and on completion), in reverse order.
- Sandbox per pod (design and measurements in ``netns.py``): own netns and IP, one PID
  namespace, ``/etc/hosts`` from ``PodContext.service_hosts()`` refreshed every
  ``hosts_refresh_interval`` s, and the `kubernetes` Service reachable (``apirelay.py``). Each
  container gets its own mount and UTS namespace (``containerfs.py``, ``sandbox.py``): hostname =
  pod name, a private ``/tmp``, ``$HOME`` and working directory (``/opt/app-root/src``, the
  project's images' configuration), fresh at each (re)start, its volumes (``volumes.py``), and
  the node's own directories hidden. Torn down when the pod reaches a terminal phase.
- ``terminationMessagePath`` (default ``/dev/termination-log``) maps to a per-container file:
  the path is rewritten in command/args/env values (``K8SEMU_TERMINATION_MESSAGE_PATH`` is set
  too). Its content (or the log tail, with ``FallbackToLogsOnError`` and a failed exit) becomes
  ``state.terminated.message``.
- Probes: exec in the pod's sandbox with the container's env; httpGet/tcpSocket to the pod IP;
  grpc counts as success. initialDelaySeconds/periodSeconds are multiplied by ``time_scale``;
  the timeout is ``max(timeoutSeconds, min_probe_timeout)`` (a Python exec probe on a loaded
  2-core machine takes over 1 s).
- restartPolicy, liveness restarts, CrashLoopBackOff (``backoff_base * 2**n`` up to
  ``backoff_max`` s), restartCount/lastState, phase, conditions, podIP/hostIP, and events
  Scheduled, Pulled, Created, Started, Unhealthy, BackOff, Killing, Failed.
- kill_pod: SIGTERM each container's process group and descendants, SIGKILL after
  ``min(grace, max_grace_seconds)``, SIGKILL anything left in the netns, remove netns and veth.
  Logs stay under the root until shutdown: ``logs(namespace, name, container, previous=False)``.
  ``exec_in_pod(namespace, name, argv, container=None)`` is ``kubectl exec`` (any container,
  sidecars included).

Not emulated: images (this machine's root filesystem stands for every image), resource limits,
security contexts, lifecycle hooks, ephemeral containers, service-link environment variables
(only the `kubernetes` Service's are set). The loopback fallback (no netns, no mount namespaces)
gives every pod 127.0.0.1 and the host's filesystem, so only one pod per port works there.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .containers import ConfigError, Container, expand, now, parse_quantity  # noqa: F401 - re-exported
from .apirelay import ApiRelay, visible_needed
from .containerfs import ContainerSandbox
from .kubelet_api import PodContext
from .netns import (
    BridgeNetwork,
    LoopbackNetwork,
    PodNet,
    host_paths_under_tmp,
    kill_netns_processes,
    make_network,
    mountns_available,
    terminate_tree,
)
from .podenv import PodEnv
from .probes import Probes
from .volumes import PodVolumes, VolumeError

log = logging.getLogger(__name__)


def _read_once(fd: int) -> bytes:
    """The sandbox's b"ok", or b"" once it exited without (nsenter, which forks to enter the
    PID namespace, keeps the pipe open while it waits: do not wait for EOF)."""
    try:
        return os.read(fd, 16)
    finally:
        os.close(fd)


class PodRunner(PodEnv, Probes, ContainerSandbox):
    """Drives one pod: sandbox, init containers, containers, probes, status."""

    def __init__(self, kubelet: ProcessKubelet, pod: dict[str, Any], ctx: PodContext) -> None:
        self.k, self.pod, self.ctx = kubelet, pod, ctx
        md = pod.get("metadata", {})
        self.namespace, self.name, self.uid = md.get("namespace", "default"), md["name"], md.get("uid", "")
        self.spec: dict[str, Any] = pod.get("spec", {})
        self.dir = kubelet.root / f"{self.namespace}_{self.name}_{self.uid[:8] or 'nouid'}"
        for sub in ("logs", "termination"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self.hosts_path, self.resolv_path = self.dir / "hosts", self.dir / "resolv.conf"
        self.inits = [Container(c, self.dir, init=True) for c in self.spec.get("initContainers", [])]
        self.sidecars = [c for c in self.inits if c.sidecar]
        self.sidecar_tasks: list[asyncio.Task[None]] = []
        self.mains = [Container(c, self.dir) for c in self.spec.get("containers", [])]
        self.volumes = PodVolumes(self)
        for c in self.mains if self.inits else []:
            c.state = {"waiting": {"reason": "PodInitializing"}}
        self.net: PodNet | None = None
        self.released = False
        self.phase = "Pending"
        self.initialized = not self.inits
        self.start_time = now()
        self._transitions: dict[str, tuple[str, str]] = {}
        self._last_pushed: dict[str, Any] | None = None
        self._hosts_text = ""
        self.task: asyncio.Task[None] | None = None
        self.hosts_task: asyncio.Task[None] | None = None
        self.policy = self.spec.get("restartPolicy", "Always")

    # -- status ---------------------------------------------------------------------
    def _cond(self, type_: str, ok: bool, reason: str = "") -> dict[str, Any]:
        status = "True" if ok else "False"
        prev = self._transitions.get(type_)
        if prev is None or prev[0] != status:
            self._transitions[type_] = (status, now())
        c = {"type": type_, "status": status, "lastProbeTime": None, "lastTransitionTime": self._transitions[type_][1]}
        if reason and not ok:
            c["reason"] = reason
        return c

    def status(self) -> dict[str, Any]:
        ready = bool(self.mains) and all(c.ready for c in self.mains + self.sidecars) and self.phase == "Running"
        st: dict[str, Any] = {
            "phase": self.phase,
            "conditions": [
                self._cond("PodScheduled", True),
                self._cond("Initialized", self.initialized, "ContainersNotInitialized"),
                self._cond("ContainersReady", ready, "ContainersNotReady"),
                self._cond("Ready", ready, "ContainersNotReady"),
            ],
            "qosClass": "BestEffort",
            "startTime": self.start_time,
            "containerStatuses": [c.status() for c in self.mains],
        }
        if self.inits:
            st["initContainerStatuses"] = [c.status() for c in self.inits]
        if self.net:
            st.update(
                hostIP=self.net.host_ip,
                hostIPs=[{"ip": self.net.host_ip}],
                podIP=self.net.ip,
                podIPs=[{"ip": self.net.ip}],
            )
        return st

    async def push(self) -> None:
        st = self.status()
        if st != self._last_pushed:
            self._last_pushed = st
            try:
                await self.ctx.update_status(st)
            except Exception:  # noqa: BLE001 - the pod may be going away
                log.exception("update_status failed for %s/%s", self.namespace, self.name)

    async def event(self, reason: str, message: str, type_: str = "Normal") -> None:
        try:
            await self.ctx.emit_event(reason, message, type_)
        except Exception:  # noqa: BLE001
            log.exception("emit_event failed for %s/%s", self.namespace, self.name)

    async def mount_volumes(self) -> None:
        """Make the pod's volumes, retrying (with the kubelet's FailedMount event) until every
        referenced object exists."""
        last = ""
        while True:
            try:
                await self.volumes.setup()
                return
            except VolumeError as e:
                if str(e) != last:
                    last = str(e)
                    await self.event("FailedMount", str(e), "Warning")
                await asyncio.sleep(max(0.5, self.k.backoff_base))

    # -- containers ------------------------------------------------------------------
    async def start(self, c: Container) -> None:
        """Resolve env (waiting on CreateContainerConfigError), then start the process."""
        last_err = ""
        while True:
            try:
                c.env = await self.resolve_env(c)
                break
            except ConfigError as e:
                if str(e) != last_err:
                    last_err = str(e)
                    await self.event("Failed", f"Error: {e}", "Warning")
                c.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(e)}}
                await self.push()
                await asyncio.sleep(max(0.2, self.k.backoff_base))
        image = c.spec.get("image", "testcluster.rayspawner.test/none")
        await self.event("Pulled", f'Container image "{image}" already present on machine')
        if c.log_path.exists() and c.log_path.stat().st_size:
            c.log_path.replace(c.log_path.with_suffix(".previous.log"))
        c.term_path.write_text("")
        self.write_hosts()
        argv, cwd = self.container_argv(c)
        ready_r, ready_w = os.pipe()
        if self.k.use_mountns:
            argv[-1] = json.dumps({**json.loads(argv[-1]), "ready_fd": ready_w})
        try:
            with open(c.log_path, "ab") as logf:
                c.proc = await asyncio.create_subprocess_exec(
                    *argv,
                    env=c.env,
                    cwd=cwd,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=logf,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                    pass_fds=(ready_w,),
                )
        finally:
            os.close(ready_w)
        # Running only once the sandbox is built (its mounts in place), as runc reports a
        # container started after its mounts; a failed sandbox exits 125 with its reason.
        await asyncio.to_thread(_read_once, ready_r)
        c.container_id = f"k8semu://{self.uid[:8]}-{c.name}-{c.proc.pid}"
        await self.event("Created", f"Created container {c.name}")
        await self.event("Started", f"Started container {c.name}")
        c.state = {"running": {"startedAt": now()}}
        log.info("%s/%s: started %s pid %s", self.namespace, self.name, c.name, c.proc.pid)

    async def wait_exit(self, c: Container) -> int:
        assert c.proc is not None
        started_at = c.state.get("running", {}).get("startedAt", now())
        rc = await c.proc.wait()
        await self.kill_tree(c, 0)  # orphans of a dead main process
        msg = c.term_path.read_text(errors="replace")[:4096] if c.term_path.exists() else ""
        if not msg and rc != 0 and c.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            msg = "\n".join(c.log_path.read_text(errors="replace").splitlines()[-80:])[-2048:]
        code = 128 - rc if rc < 0 else rc
        term = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": started_at,
            "finishedAt": now(),
            "containerID": c.container_id,
        }
        term.update({"signal": -rc} if rc < 0 else {}, **({"message": msg} if msg else {}))
        c.state, c.ready, c.started = {"terminated": term}, False, False
        log.info("%s/%s: container %s exited %s", self.namespace, self.name, c.name, code)
        return code

    async def backoff(self, c: Container) -> None:
        delay = min(self.k.backoff_max, self.k.backoff_base * 2**c.restart_count)
        c.last_state, c.state = (
            c.state,
            {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": f"back-off {delay:.1f}s restarting failed container={c.name} pod={self.name}",
                }
            },
        )
        await self.event("BackOff", "Back-off restarting failed container", "Warning")
        await self.push()
        await asyncio.sleep(delay)
        c.restart_count += 1

    def should_restart(self, c: Container, code: int) -> bool:
        """Sidecars restart whenever they exit, whatever the pod's restartPolicy."""
        return c.sidecar or self.policy == "Always" or (self.policy == "OnFailure" and code != 0)

    async def supervise(self, c: Container) -> None:
        while True:
            await self.start(c)
            has_startup = "startupProbe" in c.spec
            c.started = not has_startup
            c.ready = c.started and "readinessProbe" not in c.spec
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                if kind in c.spec:
                    c.probe_tasks.append(asyncio.create_task(self.probe_loop(c, kind, c.spec[kind])))
            await self.push()
            try:
                code = await self.wait_exit(c)
            finally:
                for t in c.probe_tasks:
                    t.cancel()
                c.probe_tasks = []
            if not self.should_restart(c, code):
                await self.push()
                return
            await self.backoff(c)

    # -- killing -----------------------------------------------------------------------
    def grace(self) -> float:
        return min(float(self.spec.get("terminationGracePeriodSeconds", 30)), self.k.max_grace_seconds)

    async def kill_tree(self, c: Container, grace: float) -> None:
        """SIGTERM the container's process group and descendants, SIGKILL after ``grace``."""
        if c.proc is not None:
            await terminate_tree(c.proc.pid, grace)

    # -- lifecycle ---------------------------------------------------------------------
    async def run(self) -> None:
        try:
            await self.event("Scheduled", f"Successfully assigned {self.namespace}/{self.name} to {self.k.node_name}")
            await self.push()
            self.net = await self.k.network.add_pod()
            await self.push()  # podIP first: service_hosts() may map a Service to this pod
            self.write_hosts()
            self.resolv_path.write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
            self.hosts_task = asyncio.create_task(self._refresh_hosts())
            await self.mount_volumes()
            for c in self.inits:
                if c.sidecar:
                    await self.start_sidecar(c)
                    continue
                while True:
                    await self.start(c)
                    await self.push()
                    code = await self.wait_exit(c)
                    if code == 0:
                        break
                    if self.policy == "Never":
                        self.phase = "Failed"
                        await self.push()
                        return
                    await self.backoff(c)
                await self.push()
            self.initialized, self.phase = True, "Running"
            await asyncio.gather(*(self.supervise(c) for c in self.mains))
            await self.stop_sidecars(self.grace())
            codes = [c.state.get("terminated", {}).get("exitCode", 0) for c in self.mains]
            self.phase = "Succeeded" if all(x == 0 for x in codes) else "Failed"
            await self.push()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001
            log.exception("pod %s/%s failed in the kubelet", self.namespace, self.name)
            self.phase = "Failed"
            await self.event("Failed", f"k8semu process kubelet: {e}", "Warning")
            await self.push()
        finally:
            if self.phase in ("Succeeded", "Failed"):
                await self.stop_sidecars(self.grace())
                await self.push()
                await self.release()

    async def start_sidecar(self, c: Container) -> None:
        """Start a native sidecar and return once it has started (its startupProbe, if any,
        succeeded): the next init container does not wait for it to exit."""
        task = asyncio.create_task(self.supervise(c), name=f"k8semu-sidecar-{self.namespace}/{self.name}/{c.name}")
        self.sidecar_tasks.append(task)
        while not c.started:
            if task.done():
                task.result()  # supervise never returns for a sidecar: re-raise its failure
                raise RuntimeError(f"sidecar {c.name} stopped before it started")
            await asyncio.sleep(0.05)
        await self.push()

    async def stop_sidecars(self, grace: float) -> None:
        """Stop sidecars after the main containers, in reverse order of definition."""
        for t in self.sidecar_tasks:
            t.cancel()  # no more restarts
        await asyncio.gather(*self.sidecar_tasks, return_exceptions=True)
        self.sidecar_tasks = []
        for c in reversed(self.sidecars):
            if c.proc is None or c.proc.returncode is not None:
                continue
            await self.event("Killing", f"Stopping container {c.name}")
            await self.kill_tree(c, grace)
            try:
                await asyncio.wait_for(self.wait_exit(c), 5)
            except asyncio.TimeoutError:
                log.error("%s/%s: sidecar %s did not die", self.namespace, self.name, c.name)

    async def release(self) -> None:
        """Tear the sandbox down (netns, leftover processes), as the kubelet does for a pod
        in a terminal phase; the status keeps its podIP, logs stay."""
        if self.hosts_task:
            self.hosts_task.cancel()
        if self.net and not self.released:
            self.released = True
            await self.k.network.remove_pod(self.net)
            await asyncio.to_thread(self.volumes.release)

    async def stop(self, grace: float) -> None:
        """Pod deletion: main (and running init) containers first, then the sidecars with what
        is left of the grace period (at least 2 s, as the kubelet gives them)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        if self.task:
            self.task.cancel()
        if self.hosts_task:
            self.hosts_task.cancel()
        for t in self.sidecar_tasks:
            t.cancel()
        live = [c for c in self.inits + self.mains if not c.sidecar and c.proc and c.proc.returncode is None]
        for c in live:
            await self.event("Killing", f"Stopping container {c.name}")
        await asyncio.gather(*(self.kill_tree(c, grace) for c in live))
        for c in live:
            try:
                await asyncio.wait_for(c.proc.wait(), 5)  # type: ignore[union-attr]
            except asyncio.TimeoutError:
                log.error("%s/%s: container %s did not die", self.namespace, self.name, c.name)
        await self.stop_sidecars(max(deadline - loop.time(), min(grace, 2.0)))
        for t in [t for c in self.inits + self.mains for t in c.probe_tasks]:
            t.cancel()
        if self.net and self.net.netns:
            await asyncio.to_thread(kill_netns_processes, self.net.netns)
        if self.task:
            await asyncio.gather(self.task, return_exceptions=True)
        if self.net and not self.released:
            self.released = True
            await self.k.network.remove_pod(self.net)
        await asyncio.to_thread(self.volumes.release)
        if not self.k.keep_dirs:
            shutil.rmtree(self.dir / "containers", ignore_errors=True)


class ProcessKubelet:
    """A :class:`kubelet_api.Kubelet` that runs pods as local processes (see module docstring)."""

    def __init__(
        self,
        root_dir: str | Path | None = None,
        network: str = "auto",
        time_scale: float = 0.25,
        max_grace_seconds: float = 10.0,
        min_probe_timeout: float = 5.0,
        backoff_base: float = 0.5,
        backoff_max: float = 10.0,
        hosts_refresh_interval: float = 0.5,
        node_name: str = "k8semu-node",
        keep_dirs: bool = False,
        hide_paths: list[Path] | tuple[Path, ...] = (),
        api_server: tuple[str, int] | None = None,
    ) -> None:
        # Pods get a private /tmp, which hides everything under the host's /tmp: the pod
        # dirs (HOME, termination-message files) must live elsewhere, e.g. /var/tmp.
        if root_dir is not None and Path(root_dir).resolve().is_relative_to("/tmp"):
            log.warning("process kubelet root %s is under /tmp, hidden from pods: using /var/tmp", root_dir)
            root_dir = None
        self._own_root = root_dir is None
        self.root = Path(root_dir) if root_dir else Path(tempfile.mkdtemp(prefix="k8semu-kubelet-", dir="/var/tmp"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.network_mode = network
        self.time_scale, self.max_grace_seconds, self.min_probe_timeout = (
            time_scale,
            max_grace_seconds,
            min_probe_timeout,
        )
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self.hosts_refresh_interval, self.node_name, self.keep_dirs = hosts_refresh_interval, node_name, keep_dirs
        self.network: BridgeNetwork | LoopbackNetwork = LoopbackNetwork()
        self.use_mountns = False
        self.keep_paths: list[Path] = []
        # the node's own directories (every pod's dir, PersistentVolume paths, the cluster's
        # keys): hidden from every container, as a node's filesystem is from a container's
        self.hide_paths = [Path(p) for p in (self.root, *hide_paths)]
        #: where the API server listens on the host; pods reach it at the `kubernetes` Service
        self.api_server = api_server
        self.api_relay: ApiRelay | None = None
        self.pods: dict[tuple[str, str], PodRunner] = {}
        self._ready = False
        self._lock: asyncio.Lock | None = None

    @property
    def mode(self) -> str:
        """``netns`` or ``loopback`` (after the first pod or :meth:`start`)."""
        return self.network.mode

    async def start(self) -> None:
        """Set up the node network (idempotent; run_pod calls it)."""
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:
            if self._ready:
                return
            self.network = await asyncio.to_thread(make_network, self.network_mode)
            await self.network.setup()
            self.use_mountns = await asyncio.to_thread(mountns_available)
            self.keep_paths = host_paths_under_tmp() if self.use_mountns else []
            self.hide_paths = visible_needed(self.hide_paths, self.keep_paths)
            if self.api_server and isinstance(self.network, BridgeNetwork):
                self.api_relay = ApiRelay(self.network.host_ip, self.api_server)
                await self.api_relay.start()
                self.network.api_relay = self.api_relay.address
            if self.keep_paths:
                log.info("process kubelet: keeping %s visible in the pods' private /tmp", self.keep_paths)
            log.info(
                "process kubelet: mode %s, private mount/uts namespaces %s, root %s",
                self.mode,
                self.use_mountns,
                self.root,
            )
            self._ready = True

    async def run_pod(self, pod: dict[str, Any], ctx: PodContext) -> None:
        await self.start()
        md = pod.get("metadata", {})
        key = (md.get("namespace", "default"), md["name"])
        old = self.pods.pop(key, None)
        if old is not None:
            await old.stop(0)
        runner = PodRunner(self, pod, ctx)
        self.pods[key] = runner
        runner.task = asyncio.create_task(runner.run(), name=f"k8semu-pod-{key[0]}/{key[1]}")

    async def kill_pod(self, pod: dict[str, Any], grace_period_seconds: int) -> None:
        md = pod.get("metadata", {})
        key = (md.get("namespace", "default"), md["name"])
        runner = self.pods.get(key)
        if runner is None or (md.get("uid") and runner.uid and md["uid"] != runner.uid):
            return
        del self.pods[key]
        grace = min(
            float(grace_period_seconds if grace_period_seconds is not None else runner.grace()), self.max_grace_seconds
        )
        await runner.stop(grace)

    async def shutdown(self) -> None:
        await asyncio.gather(*(r.stop(0) for r in self.pods.values()), return_exceptions=True)
        self.pods.clear()
        if self.api_relay:
            await self.api_relay.stop()
        await self.network.teardown()
        self._ready = False
        if self._own_root and not self.keep_dirs:
            shutil.rmtree(self.root, ignore_errors=True)

    def runner(self, namespace: str, name: str) -> PodRunner:
        return self.pods[(namespace, name)]

    def pod_ip(self, namespace: str, name: str) -> str | None:
        net = self.pods[(namespace, name)].net
        return net.ip if net else None

    def logs(self, namespace: str, name: str, container: str | None = None, previous: bool = False) -> str:
        """The container's stdout/stderr (the first container's if ``container`` is None)."""
        r = self.pods.get((namespace, name))
        if r is not None:
            c = next((x for x in r.mains + r.inits if container in (None, x.name)), None)
            path = c.log_path if c else None
        else:  # killed pod: logs stay until shutdown
            dirs = sorted(self.root.glob(f"{namespace}_{name}_*/logs"), key=lambda p: p.stat().st_mtime)
            path = dirs[-1] / f"{container}.log" if dirs and container else None
        if path is not None and previous:
            path = path.with_suffix(".previous.log")
        return path.read_text(errors="replace") if path and path.exists() else ""

    def exec_plan(
        self, namespace: str, name: str, argv: list[str], container: str | None = None
    ) -> tuple[list[str], dict[str, str], str]:
        """argv, env and cwd that run ``argv`` in a running container of the pod (``pods/exec``,
        run by kubelet-streams); raises LookupError if there is no such container."""
        r = self.pods.get((namespace, name))
        if r is None or r.net is None:
            raise LookupError(f"pod {namespace}/{name} is not running on this node")
        c = next((x for x in r.mains + r.inits if container in (None, x.name)), None)
        if c is None or c.proc is None or c.proc.returncode is not None:
            raise LookupError(f'container not found ("{container}")')
        full, cwd = r.enter(c, argv)
        log.info("%s/%s: exec in %s: %s", namespace, name, c.name, argv)
        return full, c.env, cwd

    async def exec_in_pod(
        self, namespace: str, name: str, argv: list[str], container: str | None = None, timeout: float = 60.0
    ) -> tuple[int, str]:
        """Run ``argv`` in the pod's sandbox with the container's env: (returncode, stdout+stderr)."""
        r = self.pods[(namespace, name)]
        c = next((x for x in r.mains + r.inits if container in (None, x.name)), None)
        if c is None:
            raise KeyError(f"container {container} is not valid for pod {name}")
        return await r.exec(c, argv, timeout)
