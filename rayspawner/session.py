"""One server's Ray cluster, from validated options to teardown: the lifecycle both spawners share.

A :class:`RayClusterSession` is to a spawner what dask-gateway's per-cluster state is to
its backend: it owns everything about one server's cluster (the frozen spec, the ref kept
in the hub's state, the backend doing the I/O, the notebook's ownerReference, the create
task, head restarts, running/failed state, the version warning, the stored size) and the
steps every spawn goes through (prepare, create in the background, wait until ready, record
success or failure, teardown, health on poll, state). The spawners are adapters from
JupyterHub's and KubeSpawner's hooks to it; the backend never sees the spawner.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable, Optional, TypeVar

from . import metrics
from .backends.base import ClusterBackend, ClusterStatus
from .errors import RaySpawnerError
from .spec import ClusterRef, RayClusterSpec
from .summary import spec_size

T = TypeVar("T")

#: state keys (JupyterHub's database); kept stable across versions
STATE_REF = "ray_cluster"
STATE_SIZE = "ray_size"


async def gather_then_raise(*steps: Awaitable[Any]) -> list[Any]:
    """Run every step to its end (one failing must not cut another's clean-up short), then
    raise the first error."""
    results = await asyncio.gather(*steps, return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results


class RayClusterSession:
    """Everything about one server's Ray cluster (see the module docstring)."""

    def __init__(
        self,
        log: logging.Logger,
        who: Callable[[], str],
        backend_for: Callable[[str], Awaitable[ClusterBackend]],
    ):
        self.log = log
        self._who = who
        #: a backend for a stored ref's kind (after a hub restart only the ref is known)
        self._backend_for = backend_for
        self.spec: RayClusterSpec | None = None
        self.ref: ClusterRef | None = None
        self.backend: ClusterBackend | None = None
        #: the notebook's ownerReference (Kubernetes), known once its pod exists
        self.owner: dict | None = None
        self.head_restarts = 0
        self.running = False
        #: the user-facing reason the last start failed
        self.failure: str | None = None
        self.version_warning: str | None = None
        #: the size kept in the hub's state (the spec is not), for quotas and the home page
        self.stored_size: dict | None = None
        self._create: asyncio.Task | None = None
        self._prepared = False

    @property
    def who(self) -> str:
        """The server, as the hub's log names it."""
        return self._who()

    # ------------------------------------------------------------- options
    def use(self, spec: RayClusterSpec | None, backend: ClusterBackend | None = None) -> None:
        """The validated spec of the next start (None: this server runs without Ray)."""
        self.spec = spec
        if spec is not None and backend is not None:
            self.backend = backend
            self.ref = spec.ref(backend.kind)

    @property
    def prepared(self) -> bool:
        """:meth:`prepare` ran for the start in progress."""
        return self._prepared

    @property
    def autoscaled(self) -> bool:
        """Workers come and go between min and max (a backend that autoscales, and a spec
        asking for it); otherwise they stay at their replicas."""
        return bool(self.spec and self.spec.autoscaling and self.backend and self.backend.autoscales)

    def size(self) -> dict | None:
        """The cluster's size (rayspawner.summary form), from the spec or the stored state."""
        return spec_size(self.spec) if self.spec else self.stored_size

    # --------------------------------------------------------------- start
    async def prepare(self) -> None:
        """What must exist before the notebook starts (the token Secret); once per start."""
        if self.spec and self.backend and not self._prepared:
            await self.backend.prepare(self.spec)
            self._prepared = True

    def create_in_background(self, owner: dict | None, timeout: float | None = None) -> None:
        """Create the cluster while the notebook starts (at most once per start)."""
        if self.spec and self.backend and self._create is None:
            self.owner = owner
            self._create = asyncio.ensure_future(self.backend.create(self.spec, owner, timeout))

    async def start(
        self,
        notebook: Callable[[], Awaitable[T]],
        *,
        timeout: float,
        stop_timeout: float,
        wait_for_head: bool,
        when_ready: Callable[[ClusterStatus, float], Awaitable[None]] | None = None,
        on_failure: Callable[[], Awaitable[None]] | None = None,
    ) -> T:
        """Start the notebook (which calls :meth:`prepare` and :meth:`create_in_background`
        when its moment comes), then wait for the cluster; any failure tears it down.

        ``when_ready(status, deadline)``: the spawner's own last checks (versions, the
        notebook's node); ``on_failure``: its own clean-up, run alongside the teardown
        (which waits up to ``stop_timeout`` seconds).
        """
        started = time.monotonic()
        self._create, self._prepared = None, False
        self.head_restarts, self.failure, self.version_warning = 0, None, None
        try:
            result = await self._notebook_unless_create_fails(asyncio.ensure_future(notebook()))
            spec, backend = self.spec, self.backend
            if spec is None or backend is None:
                return result
            if self._create is None:  # a notebook that never reached its create hook
                self.create_in_background(None, timeout)
            await self._create
            remaining = max(5.0, timeout - (time.monotonic() - started))
            if wait_for_head:
                status = await backend.wait_ready(spec, remaining)
            else:
                status = await backend.status(spec)
            if when_ready is not None:
                await when_ready(status, started + remaining)
            seconds = time.monotonic() - started
            self.log.info("Ray cluster %s ready for %s after %.1f s", spec.name, self.who, seconds)
            metrics.spawn_succeeded(backend.kind, seconds)
            self.running = True
            return result
        except BaseException as e:
            if isinstance(e, RaySpawnerError):
                self.failure = e.message
            elif not isinstance(e, asyncio.CancelledError) and self.spec:
                self.log.error("Starting %s with Ray cluster %s failed: %r", self.who, self.spec.name, e)
            if self.spec and self.backend:
                metrics.spawn_failed(self.backend.kind, getattr(e, "reason_label", type(e).__name__))
            steps = [self._teardown_keeping_error(stop_timeout)] + ([on_failure()] if on_failure else [])
            await asyncio.gather(*steps, return_exceptions=True)
            raise

    async def _notebook_unless_create_fails(self, notebook: asyncio.Future) -> Any:
        """The notebook's start, cut short as soon as the cluster's create fails meanwhile:
        that error is the one the user needs, not the notebook's start timeout later (a
        notebook pod waiting for a token Secret that will never exist, for one)."""
        try:
            while not notebook.done():
                create = self._create
                if create is not None and create.done() and not create.cancelled() and create.exception():
                    raise create.exception()  # type: ignore[misc]
                # the create begins inside the notebook's start: until then, look again shortly
                waiting = {notebook} if create is None or create.done() else {notebook, create}
                await asyncio.wait(
                    waiting, timeout=0.5 if create is None else None, return_when=asyncio.FIRST_COMPLETED
                )
            return notebook.result()
        finally:
            if not notebook.done():
                notebook.cancel()
                await asyncio.gather(notebook, return_exceptions=True)

    async def _teardown_keeping_error(self, timeout: float) -> None:
        try:
            await self.teardown(timeout)
        except Exception as e:  # the start's own error is what the user needs to see
            self.log.error("Cleaning up Ray cluster of %s failed: %s", self.who, e)

    # ---------------------------------------------------------------- stop
    async def teardown(self, timeout: float) -> None:
        """Cancel a create in progress and delete the cluster; missing is fine."""
        task, self._create = self._create, None
        if task and not task.done():
            task.cancel()
        ref = self.ref
        if not ref:
            return
        backend = self.backend or await self._backend_for(ref.backend)
        started = time.monotonic()
        # the spec (when known) lets the backend skip objects this cluster never had
        await backend.delete(self.spec or ref, timeout)
        self._prepared = False
        was_running, self.running = self.running, False
        metrics.teardown_done(backend.kind, time.monotonic() - started, was_running)

    # ---------------------------------------------------------------- poll
    async def health(self, head_restart_limit: int) -> str | None:
        """While the cluster runs: None if it is fine (a vanished head is recreated where the
        backend can, ``head_restart_limit`` times), else why the server has failed."""
        ref = self.ref
        if not ref or not self.running:
            return None
        if self.backend is None:
            self.backend = await self._backend_for(ref.backend)
        backend = self.backend
        st = await backend.status(self.spec or ref)
        if st.failed_workers:
            return "worker(s) failed for good: " + "; ".join(f"{r}: {w}" for r, w in st.failed_workers.items())
        if st.exists and st.phase != "terminating":
            return None
        if self.head_restarts >= head_restart_limit or not self.spec or not backend.can_recreate_head:
            return "its Ray head is gone"
        self.head_restarts += 1
        self.log.warning(
            "Ray head of %s vanished; recreating it (%d/%d)", ref.name, self.head_restarts, head_restart_limit
        )
        try:
            await backend.recreate_head(self.spec, self.owner)
        except RaySpawnerError as e:
            return f"its Ray head could not be recreated: {e.message}"
        return None

    async def status(self) -> Optional[ClusterStatus]:
        """The cluster's status during a start (None without a cluster or on an API error)."""
        if not self.spec or not self.backend:
            return None
        try:
            return await self.backend.status(self.spec)
        except RaySpawnerError:
            return None

    # --------------------------------------------------------------- state
    def to_state(self) -> dict[str, Any]:
        if not self.ref:
            return {}
        state: dict[str, Any] = {
            STATE_REF: {"name": self.ref.name, "namespace": self.ref.namespace, "backend": self.ref.backend}
        }
        size = self.size()
        if size:
            state[STATE_SIZE] = size
        return state

    def load_state(self, state: dict[str, Any]) -> bool:
        """Know the cluster from the hub's stored state; True if there is one."""
        state = state or {}
        self.stored_size = state.get(STATE_SIZE) or self.stored_size
        cluster = state.get(STATE_REF)
        if not cluster:
            return False
        self.ref = ClusterRef(cluster["name"], cluster["namespace"], cluster.get("backend", ""))
        if not self.running:
            self.running = True
            metrics.reattached(self.ref.backend or "unknown")
        return True

    def forget(self) -> None:
        """JupyterHub cleared the server's state: nothing of this cluster is known any more."""
        self.spec = self.ref = self.backend = self.owner = None
        self.version_warning = self.stored_size = None
        self.running = False
