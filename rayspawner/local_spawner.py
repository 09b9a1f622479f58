"""LocalRaySpawner: local-process notebooks, each with its own local Ray cluster.

JupyterHub's :class:`~jupyterhub.spawner.SimpleLocalProcessSpawner` (the hub's
own user, a per-user home; ``LocalProcessSpawner`` would switch to system users
that need not exist) plus:

- KubeSpawner's ``profile_list`` (:mod:`rayspawner.profiles`), validated with the
  same :func:`~rayspawner.options.check_user_options` and
  :func:`~rayspawner.options.resolve_spec` limits as RaySpawner; bad input is a
  400 before anything starts (``apply_user_options`` time);
- a Ray cluster per server from :class:`~rayspawner.backends.local.LocalBackend`,
  started concurrently with the notebook; ``start`` returns once Ray reports the
  head and every requested worker ALIVE (local mode waits for workers too: they
  boot in seconds here); the notebook gets ``RAY_ADDRESS=127.0.0.1:<GCS port>``
  (``ray_connect_mode = "driver"``: the kernel is a direct driver on the head's
  node) or ``ray://127.0.0.1:<port>`` (``"client"``), the dashboard URLs and the
  cluster's token in its environment;
- ``stop`` tears everything down (notebook, its kernels, every Ray process of
  the cluster, its ports and temp dir); ``poll`` reports the server failed when
  its Ray head is gone or a worker failed past its restarts, and tears the
  cluster down when the notebook is gone (also after a hub restart: JupyterHub
  then only polls, it never calls ``stop``);
- a periodic sweep (``ray_orphan_sweep_interval``) removes clusters under
  ``local_temp_root`` that no live server owns.

Files: the Ray temp root (``local_temp_root``, default ``/tmp/rsp-<uid>``) and the
notebook homes (default ``<temp root>/.home/<user>``) live in a directory created with
mode 0700, or checked before use (owner is the hub's user, no group/other bits, not a
symlink): a spawn under a directory another account could control is refused with a
message naming the path, before anything starts (:mod:`rayspawner.localpaths`).

What local mode isolates, and what it does not:

- each cluster has its own ports, temp dir and token, so a user cannot use another
  user's cluster through its ports without that token;
- but every notebook, kernel and Ray process runs as the hub's own system user. Any
  user can therefore read any other user's files and process environments
  (``/proc/<pid>/environ``, which holds their Ray token and JupyterHub API token),
  signal their processes and so use or stop their clusters. CPU, memory and GPUs are
  shared, not enforced.

Local mode is for one person, or for users who trust each other (the hub logs this
at WARNING when the spawner is first used). Running each user's processes as a system
user of their own is not offered; use RaySpawner on Kubernetes to separate users.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import re
import secrets
import sys
from pathlib import Path
from typing import Any, AsyncIterator

import psutil

from jupyterhub.spawner import SimpleLocalProcessSpawner
from traitlets import Int, Unicode, default, validate

from . import activity, aio, progress_steps, quotas
from .backends.local import SERVER_ROOT, LocalBackend, find_processes, kill_processes
from .config import RayConfig
from .errors import ConfigError, InvalidOptions
from .localpaths import private_dir, user_temp_root
from .options import resolve_spec
from .profiles import ProfileListMixin
from .registry import hub_process
from .session import STATE_REF, RayClusterSession, gather_then_raise
from .summary import local_size
from .versions import SLOW_IMPORT_DISTRIBUTIONS

SERVER_MARKER = "RAYSPAWNER_SERVER_ID"

ISOLATION_WARNING = (
    "LocalRaySpawner runs every user's notebook, kernels and Ray cluster as this hub's own user (%s): "
    "users can read each other's files and process environments (/proc/<pid>/environ, with their Ray "
    "and JupyterHub tokens) and use or stop each other's clusters. Use local mode only for yourself or "
    "users who trust each other."
)


def _warn_isolation(log: logging.Logger) -> None:
    if hub_process.warn_once("local-isolation"):
        try:
            import pwd

            who = pwd.getpwuid(os.geteuid()).pw_name
        except (ImportError, KeyError):
            who = f"uid {os.geteuid()}"
        log.warning(ISOLATION_WARNING, who)


def slow_import_hint() -> str | None:
    """What to uninstall, if this environment has a package that slows every Ray process's start
    (:data:`.versions.SLOW_IMPORT_DISTRIBUTIONS`); None if it has none."""
    found = [dist for dist, module in SLOW_IMPORT_DISTRIBUTIONS.items() if importlib.util.find_spec(module)]
    if not found:
        return None
    return (
        f"{', '.join(found)} is installed here: every Python process of a local Ray cluster (about 8 per "
        f"head) and every kernel's `import ray` spends over a second of CPU importing it, which about "
        f"doubles Ray's start-up on a small machine. `pip uninstall {' '.join(found)}` removes that "
        f"(jsonschema works without it; only its 'iri' format checks are skipped)."
    )


def _warn_slow_imports(log: logging.Logger) -> None:
    if hub_process.warn_once("slow-imports"):
        hint = slow_import_hint()
        if hint:
            log.warning(hint)


def _route_logs_to_hub(hub_log: logging.Logger) -> None:
    """Send the ``rayspawner`` loggers' INFO lines to the hub's log handlers: in JupyterHub
    only its own logger has handlers, and records of other loggers would reach Python's
    last-resort handler (WARNING and up, on stderr) only."""
    ours = logging.getLogger("rayspawner")
    if ours.handlers or logging.getLogger().handlers or not hub_log.handlers or hub_log.name == "rayspawner":
        return  # already routed, or someone configured logging (pytest, basicConfig)
    for handler in hub_log.handlers:
        ours.addHandler(handler)
    ours.setLevel(logging.INFO)
    ours.propagate = False


def detected_gpus() -> int:
    """GPUs this machine offers to Ray: CUDA_VISIBLE_DEVICES if set, else /dev/nvidiaN."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    return sum(1 for p in Path("/dev").glob("nvidia[0-9]*") if re.fullmatch(r"nvidia[0-9]+", p.name))


class LocalRaySpawner(ProfileListMixin, RayConfig, SimpleLocalProcessSpawner):
    """A local notebook server plus its own Ray cluster as local processes."""

    local_temp_root = Unicode(
        "",
        config=True,
        help="""Directory holding one short temp dir per Ray cluster (``<root>/<8 hex>``), the
        port lock files and (by default) the notebook homes (``<root>/.home/<user>``). Empty:
        ``/tmp/rsp-<uid>`` (per hub user). It is created with mode 0700, and an existing one is
        used only if it is owned by the hub's user, has no group/other permission bits and is
        not a symlink; otherwise spawns are refused with a message saying what is wrong.
        Another account controlling it could plant code that Ray runs as the hub's user. Keep
        it short: Ray's unix socket paths must stay under ~107 characters.""",
    )
    local_port_range = Unicode(
        "20000-32700",
        config=True,
        help="""Ports the local Ray clusters use, as ``LOW-HIGH``. Each Ray node takes a
        block of 100 (GCS, client, dashboard, agents, metrics, node/object manager, Ray Client
        servers, worker ports). Keep it below the kernel's ephemeral range
        (/proc/sys/net/ipv4/ip_local_port_range, usually from 32768); 23000-23999 (Ray's
        default client server range) is always skipped.""",
    )
    local_gpus = Int(
        -1,
        config=True,
        help="""GPUs this machine can give Ray clusters; -1 detects them (CUDA_VISIBLE_DEVICES,
        else /dev/nvidiaN). A spawn asking for more GPUs than this is refused with a message
        before anything starts.""",
    )
    local_client_warmup_attempts = Int(
        5,
        config=True,
        help="""How many warm-up Ray Client connections (each in a subprocess) a new head gets
        before the spawn fails. The first connection to a fresh head can fail with "Starting
        Ray client server failed"; the server is ready only once one succeeded.""",
    )

    local_worker_restart_limit = Int(
        3,
        config=True,
        help="""How many times a Ray worker node that dies (or does not join its cluster within
        2 minutes) is restarted. Past that, a spawn in progress fails with a message naming the
        worker, and a running server is reported failed by poll.""",
    )

    local_max_parallel_starts = Int(
        1,
        config=True,
        help="""How many Ray heads may boot at the same time (the rest wait their turn, which
        the spawn progress shows). 1 suits small machines: Ray's raylet and dashboard agent
        must register within fixed windows (30 s / 15 s) that parallel boots can miss.""",
    )

    _ray_options_loaded: bool = False
    _server_marker: str = ""
    _notebook_phase: str = ""
    _progress_shown: asyncio.Event | None = None

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        _warn_isolation(self.log)
        _warn_slow_imports(self.log)
        self.ray_session = RayClusterSession(self.log, lambda: self._log_name, self._backend_for)

    async def _backend_for(self, kind: str) -> LocalBackend:
        return self.backend

    @property
    def temp_root(self) -> str:
        return self.local_temp_root or user_temp_root()

    @default("home_dir_template")
    def _home_dir_template_default(self) -> str:
        # under the private temp root (a dot dir, which the orphan sweep skips), not
        # SimpleLocalProcessSpawner's /tmp/{username} that anyone could create first
        return os.path.join(self.temp_root, ".home", "{username}")

    @default("cmd")
    def _cmd_default(self) -> list[str]:
        # the hub's own Python: jupyter_server, ipykernel and Ray match the hub's exactly
        return [sys.executable, "-m", "jupyterhub.singleuser"]

    @default("start_timeout")
    def _start_timeout_default(self) -> int:
        return 300

    @validate("local_port_range")
    def _check_range(self, proposal: Any) -> str:
        m = re.fullmatch(r"\s*(\d{4,5})\s*-\s*(\d{4,5})\s*", proposal.value)
        if not m or not 1024 <= int(m.group(1)) < int(m.group(2)) <= 65535 or int(m.group(2)) - int(m.group(1)) < 200:
            raise ConfigError(
                f"local_port_range must be LOW-HIGH (1024-65535, at least 200 ports), got {proposal.value!r}"
            )
        return proposal.value

    # ------------------------------------------------------------ backend
    @property
    def backend(self) -> LocalBackend:
        lo, hi = (int(x) for x in self.local_port_range.split("-"))
        key = (
            self.temp_root,
            lo,
            hi,
            self.local_client_warmup_attempts,
            self.local_max_parallel_starts,
            self.local_worker_restart_limit,
        )
        backends = hub_process.local_backends
        if key not in backends:
            _route_logs_to_hub(self.log)
            backends[key] = LocalBackend(
                temp_root=self.temp_root,
                port_range=(lo, hi),
                warmup_attempts=self.local_client_warmup_attempts,
                max_parallel_starts=self.local_max_parallel_starts,
                worker_restart_limit=self.local_worker_restart_limit,
            )
        backend = backends[key]
        backend.start_sweeper(self.ray_orphan_sweep_interval, self.ray_orphan_grace_seconds)
        return backend

    # ------------------------------------------------------------ options
    async def load_user_options(self) -> None:
        """Apply the profile, then validate everything into a RayClusterSpec (or raise
        InvalidOptions, a 400 with a message, before anything exists)."""
        await self.load_profile_options()
        self.ray_session.use(None)  # a refused respawn must not act on an earlier server's spec
        if not self.ray_enabled:
            return
        spec = resolve_spec(
            self, username=self.user.name, servername=self.name or "", namespace="local", notebook_image="local"
        )
        if self.ray_image:
            self.log.info("ray_image %r is ignored in local mode: Ray runs from the hub's Python", self.ray_image)
        available = self.local_gpus if self.local_gpus >= 0 else detected_gpus()
        if spec.total.gpu > available:
            raise InvalidOptions(
                f"This profile asks for {spec.total.gpu} GPU(s), but this machine has {available}: "
                "local Ray clusters can only use the hub machine's own GPUs. Choose a CPU profile.",
                reason="no_gpu",
            )
        # the user's totals; the session holds the spec at once (that is the reservation)
        self.ray_session.use(quotas.admit(self, spec), self.backend)
        self.log.info(
            "Ray cluster %s for %s: head %s CPU, %d worker(s)",
            spec.name,
            self._log_name,
            spec.head.cpu,
            spec.desired_workers,
        )

    async def _run_apply_user_options(self, user_options: dict) -> None:
        # JupyterHub >= 5.3 calls this before start(): refusing here makes bad options a 400.
        await self.load_user_options()
        self._ray_options_loaded = True
        if self.apply_user_options:
            await super()._run_apply_user_options(user_options)

    # -------------------------------------------------------------- start
    def get_env(self) -> dict[str, str]:
        env = super().get_env()
        env[SERVER_ROOT] = self.temp_root  # found by the demo's last-resort clean-up
        if self._server_marker:
            env[SERVER_MARKER] = self._server_marker
        session = self.ray_session
        if session.ref and session.backend:
            env.update(session.backend.notebook_env(session.spec or session.ref))
        return env

    def get_args(self) -> list[str]:
        args = super().get_args()
        if os.geteuid() == 0 and "--allow-root" not in args:
            args.append("--allow-root")  # jupyter_server refuses root without it
        return args + (activity.server_args() if self.ray_session.spec else [])  # Ray work counts as activity

    def _check_paths(self) -> None:
        """Refuse (UnsafePathError, nothing started) a temp root or a notebook home that
        another account controls: code planted in either runs as the hub's user."""
        self.backend.check_paths()
        private_dir(self.home_dir, f"the notebook home of {self._log_name} (LocalRaySpawner.home_dir_template)")

    async def start(self):
        if not self._ray_options_loaded:
            await self.load_user_options()
        self._check_paths()
        self._ray_options_loaded = False
        self._server_marker = secrets.token_hex(6)
        self._notebook_phase = ""
        self._progress_shown = asyncio.Event()
        session = self.ray_session
        if session.spec is None:
            return await super().start()

        async def notebook() -> Any:
            await session.prepare()
            session.create_in_background(None, timeout=self.start_timeout)
            self._notebook_phase = "starting"
            url = await super(LocalRaySpawner, self).start()  # the notebook starts while the head does
            self._notebook_phase = "started"
            self.backend.notebook_started(session.ref, self.pid)
            return url

        async def shown(status: Any, deadline: float) -> None:
            # JupyterHub stops reading progress() once start() returns: give it a moment
            # to show the last steps (workers N/N, ready)
            try:
                await aio.wait_for(self._progress_shown.wait(), 2.0)
            except asyncio.TimeoutError:
                pass

        return await session.start(
            notebook,
            # local heads wait their turn to boot: the whole start timeout, less a margin
            timeout=max(10.0, self.start_timeout - 5),
            stop_timeout=self.ray_stop_timeout,
            wait_for_head=self.ray_wait_for_head,
            when_ready=shown if self.ray_wait_for_head else None,
            on_failure=lambda: self._stop_notebook(now=True),
        )

    # -------------------------------------------------------- stop / poll
    async def _stop_notebook(self, now: bool = False) -> None:
        if self.pid:
            await super().stop(now)
        await self._kill_marked(self._server_marker)

    async def _kill_marked(self, marker: str) -> None:
        if marker:  # kernels and anything else the notebook started
            left = await kill_processes(lambda: find_processes(SERVER_MARKER, marker), 20, what=self._log_name)
            if left:
                self.log.error("Processes of %s never died: %s", self._log_name, left)

    async def stop(self, now: bool = False) -> None:
        try:
            await gather_then_raise(self._stop_notebook(now), self.ray_session.teardown(self.ray_stop_timeout))
        finally:
            self._server_marker = ""

    async def poll(self):
        # SimpleLocalProcessSpawner.poll clears the state of a dead notebook, and JupyterHub
        # then never calls stop (also after a hub restart): the cluster goes down here.
        session, marker = self.ray_session, self._server_marker
        ref, running = session.ref, session.running
        status = await super().poll()
        if status is not None:
            if ref:
                self.log.info(
                    "The notebook of %s is gone (status %s); tearing down Ray cluster %s",
                    self._log_name,
                    status,
                    ref.name,
                )
                session.ref, session.running = ref, running  # clear_state (in poll) forgot them
                await gather_then_raise(self._kill_marked(marker), session.teardown(self.ray_stop_timeout))
                session.forget()
            return status
        problem = await session.health(head_restart_limit=0)
        if problem:
            self.log.error("Ray cluster of %s: %s; reporting the server as failed", self._log_name, problem)
            try:  # JupyterHub skips stop() for a server whose poll says it died
                await self.stop(now=True)
            except Exception as e:  # the orphan sweep remains
                self.log.error("Could not remove the failed server %s: %s", self._log_name, e)
            return 1
        return None

    # ----------------------------------------------------------- progress
    async def progress(self) -> AsyncIterator[dict[str, Any]]:
        """Plain-words steps with a rising ``progress``: head starting, head accepting
        connections, notebook started, workers joined k/N, and any worker restarts."""
        sent: set[str] = set()
        pct = 0
        seen_events = 0
        while True:
            spec = self.ray_session.spec
            cluster = self.backend.cluster(spec) if spec else None
            if not spec or not cluster:
                return
            st = await self.backend.status(spec)
            steps: list[tuple[int, str]] = []
            if st.head_failed:
                steps.append((100, st.message(spec)))
            elif st.head_ready:
                steps.append((40, f"Ray head of {spec.name} is accepting connections"))
            else:
                steps.append((10, f"Ray head of {spec.name}: {st.phase or 'starting'}"))
            if self._notebook_phase == "started":
                steps.append((30, "Notebook server started"))
            if st.head_ready and st.workers_desired:
                steps.append(
                    (
                        50 + 40 * st.workers_ready // st.workers_desired,
                        f"Ray workers joined {st.workers_ready}/{st.workers_desired}",
                    )
                )
            for event in cluster.events[seen_events:]:
                steps.append((pct, f"Ray cluster {spec.name}: {event}"))
            seen_events = len(cluster.events)
            for warning in st.warnings:
                steps.append((pct, f"Ray cluster {spec.name}: {warning}"))
            done = st.head_ready and st.workers_ready >= st.workers_desired
            if done:
                steps.append((95, progress_steps.ready_message(spec, st, None, self.ray_session.version_warning)))
            for step_pct, msg in sorted(steps, key=lambda x: x[0]):
                if msg in sent:
                    continue
                sent.add(msg)
                pct = max(pct, step_pct)
                yield {"progress": pct, "message": msg}
            if st.head_failed or done:
                if self._progress_shown is not None:
                    self._progress_shown.set()
                return
            await asyncio.sleep(1)

    # -------------------------------------------------------------- state
    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        session = self.ray_session
        cluster = self.backend.cluster(session.ref) if session.ref else None
        if cluster:
            state.update(session.to_state())
            state["ray_local"] = cluster.to_state()  # ports, temp dir, pids; never the token
        if self._server_marker:
            state["server_marker"] = self._server_marker
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        state = state or {}
        self._server_marker = state.get("server_marker", self._server_marker)
        if state.get("ray_local"):
            cluster = self.backend.adopt(state["ray_local"])
            session = self.ray_session
            session.backend = self.backend
            session.load_state({**state, STATE_REF: {"name": cluster.name, "namespace": "local", "backend": "local"}})
            session.stored_size = session.stored_size or local_size(cluster)
            if self.pid and not psutil.pid_exists(self.pid):
                # the notebook died while the hub was down: JupyterHub's start-up poll
                # tears the cluster down; say why in the log now
                self.log.info(
                    "Notebook of %s (pid %s) is gone; its Ray cluster %s will be torn down",
                    self._log_name,
                    self.pid,
                    cluster.name,
                )

    def clear_state(self) -> None:
        super().clear_state()
        self.ray_session.forget()
        self._server_marker = ""
