"""A kubelet that runs each pod's containers as real local processes.

``ProcessKubelet(root_dir=None, network="auto", time_scale=0.25, max_grace_seconds=10,
min_probe_timeout=5, backoff_base=0.5, backoff_max=10, hosts_refresh_interval=0.5,
node_name="k8semu-node", keep_dirs=False)`` implements :class:`kubelet_api.Kubelet`.

- Containers: ``command`` + ``args`` (``$(VAR)`` expanded) with the resolved ``env``/``envFrom``
  (``value``, ``secretKeyRef``, ``configMapKeyRef``, ``fieldRef``, ``resourceFieldRef``) and
  ``workingDir``. Images are ignored: this machine's Python environment is used
  (``dirname(sys.executable)`` first on ``PATH``). A missing Secret/ConfigMap/key leaves the
  container waiting with ``CreateContainerConfigError``, retried. initContainers run first.
- Sandbox per pod (design and measurements in ``netns.py``): own netns and IP, hostname = pod
  name, private ``/tmp`` (= ``TMPDIR``), ``/etc/hosts`` from ``PodContext.service_hosts()``
  refreshed every ``hosts_refresh_interval`` s. Torn down when the pod reaches a terminal phase.
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
  ``exec_in_pod(namespace, name, argv)`` is ``kubectl exec``.

Not emulated: images, volumes (mounts are ignored, paths are the host's), resource limits,
security contexts, lifecycle hooks, sidecar init containers, ephemeral containers. The loopback
fallback (no netns) gives every pod 127.0.0.1, so only one pod per port works.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import psutil

from .containers import ConfigError, Container, expand, now, parse_quantity  # noqa: F401 - re-exported
from .kubelet_api import PodContext
from .netns import (BridgeNetwork, LoopbackNetwork, PodNet, http_probe, kill_netns_processes, make_network,
                    mountns_available, render_hosts, run_captured, tcp_probe, terminate_tree)

log = logging.getLogger(__name__)

class PodRunner:
    """Drives one pod: sandbox, init containers, containers, probes, status."""

    def __init__(self, kubelet: ProcessKubelet, pod: dict[str, Any], ctx: PodContext) -> None:
        self.k, self.pod, self.ctx = kubelet, pod, ctx
        md = pod.get("metadata", {})
        self.namespace, self.name, self.uid = md.get("namespace", "default"), md["name"], md.get("uid", "")
        self.spec: dict[str, Any] = pod.get("spec", {})
        self.dir = kubelet.root / f"{self.namespace}_{self.name}_{self.uid[:8] or 'nouid'}"
        for sub in ("logs", "termination", "tmp", "home"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir / "tmp", 0o1777)
        self.hosts_path, self.resolv_path = self.dir / "hosts", self.dir / "resolv.conf"
        self.inits = [Container(c, self.dir) for c in self.spec.get("initContainers", [])]
        self.mains = [Container(c, self.dir) for c in self.spec.get("containers", [])]
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
        ready = bool(self.mains) and all(c.ready for c in self.mains) and self.phase == "Running"
        st: dict[str, Any] = {
            "phase": self.phase,
            "conditions": [
                self._cond("PodScheduled", True),
                self._cond("Initialized", self.initialized, "ContainersNotInitialized"),
                self._cond("ContainersReady", ready, "ContainersNotReady"),
                self._cond("Ready", ready, "ContainersNotReady"),
            ],
            "qosClass": "BestEffort", "startTime": self.start_time,
            "containerStatuses": [c.status() for c in self.mains],
        }
        if self.inits:
            st["initContainerStatuses"] = [c.status() for c in self.inits]
        if self.net:
            st.update(hostIP=self.net.host_ip, hostIPs=[{"ip": self.net.host_ip}],
                      podIP=self.net.ip, podIPs=[{"ip": self.net.ip}])
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

    # -- sandbox -------------------------------------------------------------------
    def write_hosts(self) -> None:
        assert self.net is not None
        try:
            names = self.ctx.service_hosts()
        except Exception:  # noqa: BLE001
            log.exception("service_hosts failed")
            names = {}
        text = render_hosts(self.name, self.net.ip, names)
        if text != self._hosts_text:
            # In place (same inode): the bind mounts in running containers see the change.
            with open(self.hosts_path, "a+") as f:
                f.seek(0)
                f.truncate()
                f.write(text)
            self._hosts_text = text

    async def _refresh_hosts(self) -> None:
        while not await asyncio.sleep(self.k.hosts_refresh_interval):
            self.write_hosts()

    def sandbox_argv(self, argv: list[str]) -> list[str]:
        assert self.net is not None
        if not self.k.use_mountns:
            return argv
        resolv = self.resolv_path if self.net.netns else None
        return self.net.sandbox_argv(self.name, self.dir / "tmp", self.hosts_path, resolv, argv)

    # -- env -------------------------------------------------------------------------
    async def _secret_or_cm(self, kind: str, name: str, optional: bool) -> dict[str, str] | None:
        obj = await (self.ctx.get_secret(name) if kind == "secret" else self.ctx.get_configmap(name))
        if obj is None and not optional:
            raise ConfigError(f'{kind} "{name}" not found')
        if obj is None or kind != "secret":
            return None if obj is None else dict(obj.get("data") or {})
        return {**{k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()},
                **(obj.get("stringData") or {})}

    def _field(self, path: str) -> str:
        md, net = self.pod.get("metadata", {}), self.net
        m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
        if m:
            return str((md.get(m.group(1)) or {}).get(m.group(2), ""))
        simple = {
            "metadata.name": self.name, "metadata.namespace": self.namespace, "metadata.uid": self.uid,
            "spec.nodeName": self.spec.get("nodeName") or self.k.node_name,
            "spec.serviceAccountName": self.spec.get("serviceAccountName", "default"),
            "status.podIP": net.ip if net else "", "status.podIPs": net.ip if net else "",
            "status.hostIP": net.host_ip if net else "", "status.hostIPs": net.host_ip if net else "",
        }
        if path not in simple:
            raise ConfigError(f"unsupported fieldRef {path!r}")
        return simple[path]

    def _resource(self, c: Container, ref: dict[str, Any]) -> str:
        spec = c.spec
        if ref.get("containerName"):
            spec = next((x.spec for x in self.inits + self.mains if x.name == ref["containerName"]), spec)
        kind, _, res = ref["resource"].partition(".")
        res_map = (spec.get("resources") or {})
        val = (res_map.get(kind) or {}).get(res) or (res_map.get("limits") or {}).get(res) if kind == "requests" \
            else (res_map.get(kind) or {}).get(res)
        if val is None:
            val = (os.cpu_count() or 1) if res == "cpu" else psutil.virtual_memory().total
        divisor = parse_quantity(ref.get("divisor", "1"))
        return str(max(1, math.ceil(parse_quantity(val) / divisor - 1e-9)))

    async def resolve_env(self, c: Container) -> dict[str, str]:
        tpath = c.spec.get("terminationMessagePath", "/dev/termination-log")
        venv_bin = os.path.dirname(sys.executable)
        env: dict[str, str] = {
            "PATH": f"{venv_bin}:{os.environ.get('PATH', '/usr/local/bin:/usr/bin:/bin')}",
            "VIRTUAL_ENV": os.path.dirname(venv_bin), "HOME": str(self.dir / "home"), "HOSTNAME": self.name,
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "TMPDIR": "/tmp" if self.k.use_mountns else str(self.dir / "tmp"),
            "K8SEMU_TERMINATION_MESSAGE_PATH": str(c.term_path),
        }
        defined: dict[str, str] = {}
        for ef in c.spec.get("envFrom") or []:
            ref = ef.get("secretRef") or ef.get("configMapRef") or {}
            data = await self._secret_or_cm("secret" if "secretRef" in ef else "configmap", ref.get("name", ""),
                                            bool(ref.get("optional")))
            defined.update({ef.get("prefix", "") + k: v for k, v in (data or {}).items()})
        for e in c.spec.get("env") or []:
            vf = e.get("valueFrom")
            if vf is None:
                defined[e["name"]] = expand(str(e.get("value", "")), defined)
                continue
            if "fieldRef" in vf:
                defined[e["name"]] = self._field(vf["fieldRef"]["fieldPath"])
            elif "resourceFieldRef" in vf:
                defined[e["name"]] = self._resource(c, vf["resourceFieldRef"])
            else:
                kind = "secret" if "secretKeyRef" in vf else "configmap"
                ref = vf.get("secretKeyRef") or vf.get("configMapKeyRef") or {}
                data = await self._secret_or_cm(kind, ref.get("name", ""), bool(ref.get("optional")))
                if data is None:
                    continue
                if ref["key"] not in data:
                    if ref.get("optional"):
                        continue
                    raise ConfigError(f"couldn't find key {ref['key']} in {kind.capitalize()} "
                                      f"{self.namespace}/{ref.get('name')}")
                defined[e["name"]] = data[ref["key"]]
        env.update({k: v.replace(tpath, str(c.term_path)) for k, v in defined.items()})
        return env

    # -- containers ------------------------------------------------------------------
    def argv(self, c: Container) -> list[str]:
        cmd, args = list(c.spec.get("command") or []), list(c.spec.get("args") or [])
        if not cmd:
            log.warning("%s/%s container %s has no command (image entrypoints are unknown): %s",
                        self.namespace, self.name, c.name, "running args" if args else "sleeping")
            cmd = [] if args else ["sleep", "infinity"]
        tpath = c.spec.get("terminationMessagePath", "/dev/termination-log")
        return [expand(a, c.env).replace(tpath, str(c.term_path)) for a in cmd + args]

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
        image = c.spec.get("image", "k8semu/none")
        await self.event("Pulled", f'Container image "{image}" already present on machine')
        if c.log_path.exists() and c.log_path.stat().st_size:
            c.log_path.replace(c.log_path.with_suffix(".previous.log"))
        c.term_path.write_text("")
        self.write_hosts()
        cwd = c.spec.get("workingDir") or str(self.dir / "home")
        if not os.path.isdir(cwd):
            log.warning("workingDir %s does not exist on this machine; using the pod home", cwd)
            cwd = str(self.dir / "home")
        with open(c.log_path, "ab") as logf:
            c.proc = await asyncio.create_subprocess_exec(
                *self.sandbox_argv(self.argv(c)), env=c.env, cwd=cwd, stdin=asyncio.subprocess.DEVNULL,
                stdout=logf, stderr=asyncio.subprocess.STDOUT, start_new_session=True)
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
        term = {"exitCode": code, "reason": "Completed" if code == 0 else "Error", "startedAt": started_at,
                "finishedAt": now(), "containerID": c.container_id}
        term.update({"signal": -rc} if rc < 0 else {}, **({"message": msg} if msg else {}))
        c.state, c.ready, c.started = {"terminated": term}, False, False
        log.info("%s/%s: container %s exited %s", self.namespace, self.name, c.name, code)
        return code

    async def backoff(self, c: Container) -> None:
        delay = min(self.k.backoff_max, self.k.backoff_base * 2 ** c.restart_count)
        c.last_state, c.state = c.state, {"waiting": {
            "reason": "CrashLoopBackOff",
            "message": f"back-off {delay:.1f}s restarting failed container={c.name} pod={self.name}"}}
        await self.event("BackOff", "Back-off restarting failed container", "Warning")
        await self.push()
        await asyncio.sleep(delay)
        c.restart_count += 1

    def should_restart(self, code: int) -> bool:
        return self.policy == "Always" or (self.policy == "OnFailure" and code != 0)

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
            if not self.should_restart(code):
                await self.push()
                return
            await self.backoff(c)

    # -- probes ----------------------------------------------------------------------
    async def probe_loop(self, c: Container, kind: str, spec: dict[str, Any]) -> None:
        scale = self.k.time_scale
        period = max(0.1, spec.get("periodSeconds", 10) * scale)
        threshold = spec.get("failureThreshold", 3)
        timeout = max(spec.get("timeoutSeconds", 1), self.k.min_probe_timeout)
        label = {"startupProbe": "Startup", "readinessProbe": "Readiness", "livenessProbe": "Liveness"}[kind]
        if kind != "startupProbe":
            while not c.started:
                await asyncio.sleep(0.05)
        await asyncio.sleep(spec.get("initialDelaySeconds", 0) * scale)
        fails = successes = 0
        while True:
            ok, msg = await self.probe(c, spec, timeout)
            if ok:
                fails, successes = 0, successes + 1
                if kind == "startupProbe":
                    c.started = True
                    c.ready = "readinessProbe" not in c.spec
                    await self.push()
                    return
                if kind == "readinessProbe" and not c.ready and successes >= spec.get("successThreshold", 1):
                    c.ready = True
                    await self.push()
            else:
                fails, successes = fails + 1, 0
                if fails == 1 or fails % threshold == 0:
                    await self.event("Unhealthy", f"{label} probe failed: {msg}".strip(), "Warning")
                if fails >= threshold:
                    if kind == "readinessProbe" and c.ready:
                        c.ready = False
                        await self.push()
                    elif kind != "readinessProbe":
                        await self.event("Killing", f"Container {c.name} failed {label.lower()} probe, "
                                         "will be restarted")
                        await self.kill_tree(c, self.grace())
                        return
            await asyncio.sleep(period)

    async def probe(self, c: Container, spec: dict[str, Any], timeout: float) -> tuple[bool, str]:
        assert self.net is not None
        try:
            if "exec" in spec:
                rc, out = await self.exec(spec["exec"].get("command", []), c.env, timeout)
                return rc == 0, out.strip()[-500:]
            if "httpGet" in spec or "tcpSocket" in spec:
                h = spec.get("httpGet") or spec["tcpSocket"]
                port = h.get("port")
                if isinstance(port, str) and not port.isdigit():
                    port = next((p["containerPort"] for p in c.spec.get("ports", []) if p.get("name") == port), 0)
                host = h.get("host") or self.net.ip
                if "tcpSocket" in spec:
                    return await tcp_probe(host, int(port), timeout)
                return await http_probe(host, int(port), h.get("path", "/"), h.get("httpHeaders", []),
                                        h.get("scheme", "HTTP").upper() == "HTTPS", timeout)
            log.warning("probe %s not supported, treated as success", list(spec))
            return True, ""
        except (OSError, asyncio.TimeoutError, ValueError) as e:
            return False, f"{type(e).__name__}: {e}"

    async def exec(self, argv: list[str], env: dict[str, str] | None, timeout: float) -> tuple[int, str]:
        """Run ``argv`` inside the pod's sandbox (like ``kubectl exec``); (returncode, output)."""
        env = env or {"PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
        return await run_captured(self.sandbox_argv(argv), env, str(self.dir / "home"), timeout)

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
            for c in self.inits:
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
                await self.release()

    async def release(self) -> None:
        """Tear the sandbox down (netns, leftover processes), as the kubelet does for a pod
        in a terminal phase; the status keeps its podIP, logs stay."""
        if self.hosts_task:
            self.hosts_task.cancel()
        if self.net and not self.released:
            self.released = True
            await self.k.network.remove_pod(self.net)

    async def stop(self, grace: float) -> None:
        if self.task:
            self.task.cancel()
        if self.hosts_task:
            self.hosts_task.cancel()
        live = [c for c in self.inits + self.mains if c.proc and c.proc.returncode is None]
        for c in live:
            await self.event("Killing", f"Stopping container {c.name}")
        await asyncio.gather(*(self.kill_tree(c, grace) for c in live))
        for t in [t for c in live for t in c.probe_tasks]:
            t.cancel()
        if self.net and self.net.netns:
            await asyncio.to_thread(kill_netns_processes, self.net.netns)
        for c in live:
            try:
                await asyncio.wait_for(c.proc.wait(), 5)  # type: ignore[union-attr]
            except asyncio.TimeoutError:
                log.error("%s/%s: container %s did not die", self.namespace, self.name, c.name)
        if self.task:
            await asyncio.gather(self.task, return_exceptions=True)
        if self.net and not self.released:
            self.released = True
            await self.k.network.remove_pod(self.net)
        if not self.k.keep_dirs:
            shutil.rmtree(self.dir / "tmp", ignore_errors=True)


class ProcessKubelet:
    """A :class:`kubelet_api.Kubelet` that runs pods as local processes (see module docstring)."""

    def __init__(self, root_dir: str | Path | None = None, network: str = "auto", time_scale: float = 0.25,
                 max_grace_seconds: float = 10.0, min_probe_timeout: float = 5.0, backoff_base: float = 0.5,
                 backoff_max: float = 10.0, hosts_refresh_interval: float = 0.5, node_name: str = "k8semu-node",
                 keep_dirs: bool = False) -> None:
        # Pods get a private /tmp, which hides everything under the host's /tmp: the pod
        # dirs (HOME, termination-message files) must live elsewhere, e.g. /var/tmp.
        if root_dir is not None and Path(root_dir).resolve().is_relative_to("/tmp"):
            log.warning("process kubelet root %s is under /tmp, hidden from pods: using /var/tmp", root_dir)
            root_dir = None
        self._own_root = root_dir is None
        self.root = Path(root_dir) if root_dir else Path(tempfile.mkdtemp(prefix="k8semu-kubelet-", dir="/var/tmp"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.network_mode = network
        self.time_scale, self.max_grace_seconds, self.min_probe_timeout = time_scale, max_grace_seconds, min_probe_timeout
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self.hosts_refresh_interval, self.node_name, self.keep_dirs = hosts_refresh_interval, node_name, keep_dirs
        self.network: BridgeNetwork | LoopbackNetwork = LoopbackNetwork()
        self.use_mountns = False
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
            log.info("process kubelet: mode %s, private mount/uts namespaces %s, root %s",
                     self.mode, self.use_mountns, self.root)
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
        grace = min(float(grace_period_seconds if grace_period_seconds is not None else runner.grace()),
                    self.max_grace_seconds)
        await runner.stop(grace)

    async def shutdown(self) -> None:
        await asyncio.gather(*(r.stop(0) for r in self.pods.values()), return_exceptions=True)
        self.pods.clear()
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

    async def exec_in_pod(self, namespace: str, name: str, argv: list[str], container: str | None = None,
                          timeout: float = 60.0) -> tuple[int, str]:
        """Run ``argv`` in the pod's sandbox with the container's env: (returncode, stdout+stderr)."""
        r = self.pods[(namespace, name)]
        c = next((x for x in r.mains if container in (None, x.name)), None)
        return await r.exec(argv, c.env if c else None, timeout)
