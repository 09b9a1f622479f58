"""RaySpawner: KubeSpawner plus a per-server Ray cluster. Lifecycle glue only.

- ``load_user_options``: the profile is applied, then everything is validated
  into a :class:`~rayspawner.spec.RayClusterSpec` (bad input fails here, before
  anything exists);
- ``_start``: the token Secret is created just before the notebook pod; right
  after the pod exists the cluster is created (owned by the pod) while the
  notebook starts, so a spawn costs max(notebook, head), not their sum;
- ``stop``: a start still in progress is cancelled first (JupyterHub does not
  cancel it); notebook and cluster are removed concurrently; 404 is success;
- ``poll``: a Ray head deleted behind the hub's back is recreated
  (``ray_head_restart_limit`` times), then the server is reported failed and
  removed (JupyterHub skips stop() for a failed server); a start that failed
  or is pending reports the notebook's state, so JupyterHub's stop() runs;
- KubeSpawner's pod requests and reflector starts also retry 429/5xx and fail
  with readable messages (see reliability docs).
- ``progress``: notebook events merged with the cluster's state.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import time
from typing import Any, AsyncIterator

from kubernetes_asyncio.client import ApiClient, V1Container, V1Pod, V1Volume, V1VolumeMount
from kubernetes_asyncio.client.exceptions import ApiException
from kubespawner import KubeSpawner
from kubespawner.objects import get_k8s_model
from kubespawner.reflector import ResourceReflector
from traitlets import TraitError

from . import metrics, naming, quotas
from .backends.base import ClusterBackend, ClusterStatus
from .backends.pods import reported_versions
from .backends.detect import kuberay_served, select_backend
from .backends.isolation import notebook_isolation
from .backends.kube import KINDS, KINDS_BY_PLURAL, KubeClient, api_error, transient, with_retries
from .config import RayConfig
from .env import notebook_env
from .errors import ClusterStartError, ConfigError, InvalidOptions, RaySpawnerError
from .hubpages import HubPagesMixin
from . import progress_steps
from .manifests import notebook as notebook_manifests
from .manifests.common import owner_reference, version_init_container, wants_version_check
from .options import check_user_options, resolve_spec
from .profiles import options_may_enable_ray
from .reflector_index import pod_events
from .spec import ClusterRef, RayClusterSpec
from .summary import spec_size
from .versions_check import compare_versions


#: the spawner whose _start runs in the current task (or a task it started)
_starting: contextvars.ContextVar = contextvars.ContextVar("rayspawner_starting", default=None)


class RayPodReflector(ResourceReflector):
    """One shared watch per namespace over every rayspawner-managed pod."""

    kind = "pods"

    @property
    def pods(self) -> dict[str, dict]:
        return self.resources


class RaySpawner(HubPagesMixin, RayConfig, KubeSpawner):
    """KubeSpawner that also starts the user's own Ray cluster when ``ray_enabled``."""

    _ray_spec: RayClusterSpec | None = None
    _ray_ref: ClusterRef | None = None
    _ray_backend: ClusterBackend | None = None
    _ray_create_task: asyncio.Task | None = None
    _ray_prepared: bool = False
    _ray_owner: dict | None = None
    _ray_head_restarts: int = 0
    _ray_running: bool = False
    _ray_version_warning: str | None = None
    _ray_failure: str | None = None
    #: the cluster's size (rayspawner.summary) restored from state, for the home page
    _ray_size: dict | None = None

    def __init__(self, *args: Any, **kwargs: Any):
        try:
            super().__init__(*args, **kwargs)
        except TraitError as e:  # a bad value in jupyterhub_config.py: say so, not "Internal Server Error"
            raise ConfigError(f"Invalid RaySpawner configuration in jupyterhub_config.py: {e}") from None

    # ---------------------------------------------------------------- options
    def _notebook_selector(self) -> dict[str, str]:
        return {
            "component": self.component_label,
            naming.LABEL_USERNAME: naming.label_value(self.user.name),
            naming.LABEL_SERVERNAME: naming.label_value(self.name or ""),
        }

    async def load_user_options(self) -> None:
        """KubeSpawner's profile handling, then the Ray spec and its backend.

        Bad input raises InvalidOptions: a ValueError (KubeSpawner's contract) and an
        HTTP 400 with the user's message. With Ray off this makes no API request.
        """
        try:
            await self.load_ray_options()
        except InvalidOptions as e:
            # the user's mistake, not the hub's: one line, no traceback (JupyterHub adds its own line)
            self.log.warning("Refused server options for %s: %s", self._log_name, e.message)
            raise
        if self._ray_spec:
            self._ray_backend = await self._backend_for(self.ray_backend)
            self._ray_ref = self._ray_spec.ref(self._ray_backend.kind)
            self.log.info(
                "Ray cluster %s for %s (%s backend)", self._ray_spec.name, self._log_name, self._ray_backend.kind
            )
            self._ray_in_use()

    async def load_ray_options(self) -> RayClusterSpec | None:
        """Apply the chosen profile and validate everything; no I/O.

        Raises InvalidOptions (HTTP 400) with a message for the user.
        """
        self._ray_spec = None  # a refused respawn must not act on an earlier server's spec
        profile_list = self._sorted_dict_values(self.profile_list)
        if callable(profile_list):
            profile_list = await profile_list(self) if asyncio.iscoroutinefunction(profile_list) else profile_list(self)
        check_user_options(self.user_options or {}, self._get_initialized_profile_list(profile_list or []))
        try:
            await super().load_user_options()
        except InvalidOptions:
            raise  # a ValueError too, already worded for the user
        except (ValueError, KeyError, TraitError) as e:
            raise InvalidOptions(f"Invalid server options: {e}") from None
        if self.ray_enabled:
            # quotas.admit: the user's totals across servers; assigned at once (its reservation)
            self._ray_spec = quotas.admit(
                self,
                resolve_spec(
                    self,
                    username=self.user.name,
                    servername=self.name or "",
                    namespace=self.namespace,
                    notebook_image=self.image,
                    notebook_selector=self._notebook_selector(),
                    image_pull_policy=self.image_pull_policy,
                ),
            )
        return self._ray_spec

    # --------------------------------------------------------------- backends
    def _kube(self) -> KubeClient:
        return KubeClient(
            retry_timeout=self.k8s_api_request_retry_timeout, request_timeout=self.k8s_api_request_timeout
        )

    async def _start_watching_ray_pods(self) -> RayPodReflector:
        return await self._start_reflector(
            kind="ray-pods",
            reflector_class=RayPodReflector,
            labels={naming.LABEL_MANAGED_BY: naming.MANAGED_BY},
            omit_namespace=self.enable_user_namespaces,
        )

    def _ray_pods(self) -> dict[str, dict]:
        reflector = self.__class__.reflectors.get(self._get_reflector_key("ray-pods"))
        return reflector.pods if reflector else {}

    @property
    def events(self) -> list[dict]:
        """KubeSpawner's ``events`` (this pod's, after the start marker) from an index:
        kubespawner sorts every event of the namespace on each call, once a second per
        spawn in progress(), and each Ray server adds its head's and workers' events."""
        return pod_events(self.event_reflector, self.namespace, self.pod_name, self._last_event)

    async def _backend_for(self, wanted: str) -> ClusterBackend:
        kind = await select_backend(wanted, self.log, auth_enabled=self.ray_auth_enabled)
        await self._start_watching_ray_pods()
        if kind == "kuberay":
            from .backends.kuberay import KubeRayBackend, watch_ray_clusters

            return KubeRayBackend(self._kube(), self._ray_pods, await watch_ray_clusters(self))
        from .backends.pods import PodsBackend

        return PodsBackend(self._kube(), self._ray_pods)

    # ------------------------------------------------------------------ start
    def get_env(self) -> dict[str, Any]:
        env = super().get_env()
        if self._ray_spec:
            env.update(notebook_env(self._ray_spec))
        return env

    async def get_pod_manifest(self):
        pod = await super().get_pod_manifest()
        spec = self._ray_spec
        if spec and wants_version_check(spec):
            probe = get_k8s_model(V1Container, version_init_container(self.image, self.image_pull_policy))
            pod.spec.init_containers = [*(pod.spec.init_containers or []), probe]
        if spec and spec.driver_mode:
            await self._add_notebook_node(spec, pod)
        return pod

    @staticmethod
    async def _add_notebook_node(spec: RayClusterSpec, pod: V1Pod) -> None:
        """Driver mode: the notebook pod joins its cluster as a node (manifests/notebook.py)."""
        container = pod.spec.containers[0]
        async with ApiClient() as api:
            serialized = api.sanitize_for_serialization(container)
        sidecar, volumes, mounts = notebook_manifests.pod_additions(spec, serialized)
        pod.spec.init_containers = [*(pod.spec.init_containers or []), get_k8s_model(V1Container, sidecar)]
        pod.spec.volumes = [*(pod.spec.volumes or []), *(get_k8s_model(V1Volume, v) for v in volumes)]
        container.volume_mounts = [*(container.volume_mounts or []), *(get_k8s_model(V1VolumeMount, m) for m in mounts)]
        pod.spec.share_process_namespace = True

    async def _make_create_pod_request(self, pod, request_timeout):
        spec, backend = self._ray_spec, self._ray_backend
        if spec and backend and not self._ray_prepared:
            if spec.network_policy and spec.notebook_selector:
                # the pod's final labels are known only now (after modify_pod_hook)
                types = await notebook_isolation(self._kube(), self.namespace, pod.metadata.labels or {})
                spec = self._ray_spec = dataclasses.replace(spec, notebook_policy_types=types)
            await backend.prepare(spec)
            self._ray_prepared = True
        try:
            created = await super()._make_create_pod_request(pod, request_timeout)
        except ApiException as e:  # KubeSpawner retries only timeouts and 409
            if transient(e):
                self.log.warning("Creating pod %s: HTTP %s, retrying", pod.metadata.name, e.status)
                return False
            raise api_error(e, "create", KINDS["Pod"], self.namespace, pod.metadata.name) from None
        if created and spec and backend and self._ray_create_task is None:
            self._ray_create_task = asyncio.ensure_future(self._create_cluster(spec, backend))
        return created

    async def _create_cluster(self, spec: RayClusterSpec, backend: ClusterBackend) -> None:
        ref_key = f"{self.namespace}/{self.pod_name}"
        deadline = time.monotonic() + self.k8s_api_request_retry_timeout
        while not self.pod_has_uid(self.pod_reflector.pods.get(ref_key)):
            if time.monotonic() > deadline:
                raise ClusterStartError(f"The notebook pod {ref_key} never appeared; cannot create its Ray cluster.")
            await asyncio.sleep(0.05)
        owner = owner_reference(self.pod_name, self.pod_reflector.pods[ref_key]["metadata"]["uid"])
        self._ray_owner = owner
        await backend.create(spec, owner)

    async def _start(self):
        _starting.set(self)  # this task's context (and its subtasks'): see _cancel_pending_start
        started = time.monotonic()
        self._ray_create_task = None
        self._ray_prepared = False
        self._ray_head_restarts = 0
        self._ray_failure = None
        try:
            url = await super()._start()
            if self._ray_spec and self._ray_backend:
                await self._ray_create_task
                remaining = max(5.0, self.start_timeout - (time.monotonic() - started))
                if self.ray_wait_for_head:
                    status = await self._ray_backend.wait_ready(self._ray_spec, remaining)
                    await self._wait_notebook_joined(started + remaining)
                else:
                    status = await self._ray_backend.status(self._ray_spec)
                await self._check_versions(status, started + remaining)
                metrics.spawn_succeeded(self._ray_backend.kind, time.monotonic() - started)
                self._ray_running = True
            return url
        except BaseException as e:
            if isinstance(e, RaySpawnerError):
                self._ray_failure = e.message
            if self._ray_spec and self._ray_backend:
                metrics.spawn_failed(self._ray_backend.kind, getattr(e, "reason_label", type(e).__name__))
                try:
                    await self._teardown_cluster()
                except Exception as cleanup_error:  # keep the original error for the user
                    self.log.error("Cleaning up Ray cluster of %s failed: %s", self._log_name, cleanup_error)
            raise

    async def _wait_notebook_joined(self, deadline: float) -> None:
        """Driver mode: "ready" means a bare ray.init() works at once, so the notebook's own
        Ray node (which joins only once the head is up) must have joined too."""
        spec = self._ray_spec
        if not spec or not spec.driver_mode:
            return
        while not notebook_manifests.node_ready(self._notebook_pod()):
            if time.monotonic() > deadline:
                raise ClusterStartError(
                    f"Your notebook could not join its Ray cluster {spec.name}: the head is ready, but the "
                    f"notebook's Ray node (container {notebook_manifests.NOTEBOOK_NODE_CONTAINER!r}) never "
                    "reported ready. Usually a NetworkPolicy blocks the notebook pod from its Ray pods, or the "
                    "notebook image lacks Ray; see that container's log.",
                    reason="notebook_node",
                )
            await asyncio.sleep(0.2)

    async def _check_versions(self, status: ClusterStatus, deadline: float) -> None:
        spec = self._ray_spec
        if not spec or not wants_version_check(spec):
            return
        while True:
            notebook = reported_versions(self.pod_reflector.pods.get(f"{self.namespace}/{self.pod_name}") or {})
            cluster = status.versions
            if notebook and cluster:
                break
            if time.monotonic() > deadline:
                self.log.warning("Could not learn Ray/Python versions of %s; skipping the check", spec.name)
                return
            await asyncio.sleep(0.5)
            status = await self._ray_backend.status(spec)
        problem = compare_versions(notebook, cluster, spec.notebook_image, spec.image)
        if problem and spec.version_check == "error":
            raise ClusterStartError(problem, reason="version_mismatch")
        if problem:
            self.log.warning(problem)
            self._ray_version_warning = problem

    # ------------------------------------------------------------- stop/poll
    async def _teardown_cluster(self) -> None:
        task, self._ray_create_task = self._ray_create_task, None
        if task and not task.done():
            task.cancel()
        ref = self._ray_ref
        if not ref:
            return
        backend = self._ray_backend or await self._backend_for(ref.backend or self.ray_backend)
        started = time.monotonic()
        # the spec (when known) lets the backend skip objects this cluster never had
        await backend.delete(self._ray_spec or ref, self.ray_stop_timeout)
        self._ray_prepared = False
        was_running, self._ray_running = self._ray_running, False
        metrics.teardown_done(backend.kind, time.monotonic() - started, was_running)

    async def _make_delete_pod_request(self, pod_name, delete_options, grace_seconds, request_timeout):
        try:
            return await super()._make_delete_pod_request(pod_name, delete_options, grace_seconds, request_timeout)
        except ApiException as e:  # KubeSpawner retries only timeouts: one 500 would forget a running pod
            if transient(e) or e.status == 409:
                self.log.warning("Deleting pod %s: HTTP %s, retrying", pod_name, e.status)
                return False
            raise api_error(e, "delete", KINDS["Pod"], self.namespace, pod_name) from None

    async def _start_reflector(self, kind, reflector_class, replace=False, **kwargs):
        """KubeSpawner's, except that a reflector whose first list failed is not kept
        (KubeSpawner would fail every later spawn with that error until the hub
        restarts), transient API errors are retried, and the error is readable."""
        key = self._get_reflector_key(kind)
        registry = self.__class__.reflectors

        async def attempt():
            try:
                return await super(RaySpawner, self)._start_reflector(kind, reflector_class, replace=replace, **kwargs)
            except Exception:
                failed = registry.get(key)
                first = failed.first_load_future if failed is not None else None
                if first is not None and first.done() and (first.cancelled() or first.exception() is not None):
                    registry.pop(key, None)  # not kept: the next attempt (or spawn) lists again
                raise

        resource = KINDS_BY_PLURAL.get(reflector_class.kind, KINDS["Pod"])
        try:
            return await with_retries(
                attempt,
                what=f"list {resource.plural} in namespace {self.namespace}",
                timeout=self.k8s_api_request_retry_timeout,
                request_timeout=None,
            )
        except ApiException as e:
            raise api_error(e, "list", resource, self.namespace, rule_verbs=["get", "list", "watch"]) from None

    async def _cancel_pending_start(self) -> None:
        """Stop during start: JupyterHub gives up on a start (timeout, or a stop request
        while pending) without cancelling it, so it would go on creating the notebook pod
        and the cluster after this stop. Cancel it (its own clean-up runs) and wait."""
        task = getattr(self, "_start_future", None)
        if task is None or task.done() or _starting.get() is self:
            return  # KubeSpawner's _start calls stop() itself (pod 409): that is not a stop during start
        self.log.info("Stopping %s while it starts: cancelling the start", self._log_name)
        task.cancel()
        await asyncio.wait({task})
        if not task.cancelled():
            task.exception()  # retrieved; the start's caller reports it

    async def stop(self, now: bool = False) -> None:
        await self._cancel_pending_start()
        if not self._ray_ref:
            return await super().stop(now)
        results = await asyncio.gather(super().stop(now), self._teardown_cluster(), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r

    async def poll(self):
        if not self._ray_use_checked:
            # once per spawner object: at hub start-up JupyterHub polls every stored server,
            # including one whose Ray spawn the previous hub process died in (no state yet)
            self._ray_use_checked = True
            if self._ray_ref or options_may_enable_ray(self, self.user_options or {}):
                self._ray_in_use()
        start = getattr(self, "_start_future", None)
        if start is not None and not start.done():
            return None  # JupyterHub polls a pending server only to stop it: stop() cancels the start
        status = await super().poll()
        if status is not None or not self._ray_ref:
            if status is not None and self._ray_ref:
                # the notebook is gone behind our back: make sure its cluster goes too
                await self._teardown_cluster()
            return status
        if not self._ray_running:
            return None  # a start that failed or never finished: the notebook decides; stop() removes both
        backend = self._ray_backend or await self._backend_for(self._ray_ref.backend or self.ray_backend)
        self._ray_backend = backend
        st = await backend.status(self._ray_ref)
        if st.exists and st.phase != "terminating":
            return None
        if (
            self._ray_head_restarts >= self.ray_head_restart_limit
            or not self._ray_spec
            or not backend.can_recreate_head
        ):
            self.log.error("Ray head of %s is gone; reporting the server as failed", self._ray_ref.name)
            return await self._fail_server()
        self._ray_head_restarts += 1
        self.log.warning(
            "Ray head of %s vanished; recreating it (%d/%d)",
            self._ray_ref.name,
            self._ray_head_restarts,
            self.ray_head_restart_limit,
        )
        try:
            await backend.recreate_head(self._ray_spec, self._ray_owner)
        except RaySpawnerError as e:
            self.log.error("Could not recreate the Ray head of %s: %s", self._ray_ref.name, e)
            return await self._fail_server()
        return None

    async def _fail_server(self) -> int:
        """Report the server failed. JupyterHub then skips stop() (poll says it is not
        running), so remove the notebook pod and what is left of the cluster here,
        as KubeSpawner does for a notebook container that exited."""
        try:
            await self.stop(now=True)
        except Exception as e:  # the notebook pod's owner GC and the orphan sweep remain
            self.log.error("Could not remove the failed server %s: %s", self._log_name, e)
        return 1

    # ------------------------------------------------------------ orphan sweep
    _sweepers: dict = {}
    _ray_use_checked: bool = False

    def _ray_in_use(self) -> None:
        """This hub process has (or had) a Ray cluster in this namespace: sweep it.

        Called where Ray comes into use: a Ray spawn's options (load_user_options), a
        stored server with a cluster (load_state), a stored server whose Ray spawn was
        cut short (first poll). Never for Ray-off servers, so a hub without Ray makes
        exactly KubeSpawner's API requests (its RBAC allows no more).
        """
        self._ensure_sweeper()

    def _ensure_sweeper(self) -> None:
        """Start this process's periodic orphan sweep for the namespace (once)."""
        if self.ray_orphan_sweep_interval <= 0:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # load_state outside the event loop: the first poll starts it
            self._ray_use_checked = False
            return
        key = (id(loop), self.namespace)
        task = RaySpawner._sweepers.get(key)
        if task is None or task.done():
            RaySpawner._sweepers[key] = asyncio.ensure_future(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        from .sweep import SWEPT_KINDS

        while True:
            try:
                await self.sweep_orphans(SWEPT_KINDS if await kuberay_served(self.log) else SWEPT_KINDS[1:])
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a failed sweep must never hurt spawning
                self.log.warning("Orphan sweep in %s failed: %s", self.namespace, e)
            await asyncio.sleep(self.ray_orphan_sweep_interval)

    async def sweep_orphans(self, kinds=None) -> list[tuple[str, str]]:
        """One sweep of this namespace; returns what was deleted."""
        from .sweep import SWEPT_KINDS, sweep

        await self._start_watching_pods()
        live = {
            p["metadata"]["uid"] for p in self.pod_reflector.pods.values() if not p["metadata"].get("deletionTimestamp")
        }
        return await sweep(
            self._kube(),
            self.namespace,
            live,
            kinds=kinds or SWEPT_KINDS[1:],
            grace_seconds=self.ray_orphan_grace_seconds,
            secrets=self.ray_orphan_sweep_secrets,
        )

    # --------------------------------------------------------------- progress
    async def progress(self) -> AsyncIterator[dict[str, Any]]:
        """KubeSpawner's notebook events merged with the spawn's steps.

        Every event carries an integer ``progress`` that never decreases (JupyterHub's
        progress bar and upstream's tests rely on it; KubeSpawner's slow-spawn message
        has none). Steps, in words a user understands, come from the reflectors (no API
        requests): notebook scheduled / started / ready; the Ray head starting /
        accepting connections; workers joined k/N; in driver mode the notebook joining
        its cluster. Unlike KubeSpawner's, this runs until the start is done even when
        ``events_enabled`` is off, so the steps are still shown.
        """
        queue: asyncio.Queue = asyncio.Queue()
        notebook_events = super().progress()

        async def pump() -> None:
            try:
                async for event in notebook_events:
                    await queue.put(event)
            finally:
                await queue.put(None)

        pump_task = asyncio.ensure_future(pump())
        reported = 0
        sent: dict[str, str] = {}  # step key -> the last message sent for it

        def stamp(event: dict[str, Any], floor: int) -> dict[str, Any]:
            nonlocal reported
            value = event.get("progress")
            own = int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0
            reported = min(100, max(reported, own, floor))
            return {**event, "progress": reported}

        pump_done = False
        try:
            while True:
                start = self._start_future
                finishing = start is not None and start.done()  # one more pass after the start ends
                try:
                    event = await asyncio.wait_for(queue.get(), 0.5) if not pump_done else ...
                except asyncio.TimeoutError:
                    event = ...
                if event is None:
                    pump_done = True
                elif event is not ...:
                    yield stamp(event, 0)
                steps, floor = await self._spawn_steps()
                for key, message in steps:
                    if sent.get(key) != message:
                        sent[key] = message
                        yield stamp({"message": message}, floor)
                if finishing and pump_done:
                    break
                if pump_done:
                    await asyncio.sleep(0.5)
            if self._ray_failure:
                yield stamp({"message": self._ray_failure}, 0)
                return
            final = await self._cluster_message(final=True) if self._ray_spec else self._notebook_final_message()
            if final:
                yield stamp({"message": final}, 95)
        finally:
            pump_task.cancel()

    def _notebook_pod(self) -> dict | None:
        reflector = self.pod_reflector
        pod = reflector.pods.get(f"{self.namespace}/{self.pod_name}") if reflector is not None else None
        if pod is None or pod["metadata"].get("deletionTimestamp"):
            return None  # an earlier server's pod on its way out says nothing about this spawn
        return pod

    async def _spawn_steps(self) -> tuple[list[tuple[str, str]], int]:
        """The steps reached so far as (key, message), and the progress they are worth."""
        pod = self._notebook_pod()
        st = None
        if self._ray_spec and self._ray_backend:
            try:
                st = await self._ray_backend.status(self._ray_spec)
            except RaySpawnerError:
                pass
        return progress_steps.spawn_steps(pod, self._ray_spec, st, self._ray_version_warning)

    def _notebook_final_message(self) -> str:
        return progress_steps.notebook_final_message(self._notebook_pod())

    async def _cluster_message(self, final: bool = False) -> str:
        """The cluster's state in one line; ``final``: the spawn's closing message."""
        spec, backend = self._ray_spec, self._ray_backend
        if not spec or not backend:
            return ""
        try:
            st = await backend.status(spec)
        except RaySpawnerError:
            return ""
        if not (final and st.head_ready):
            return progress_steps.describe_cluster(spec, st, self._ray_version_warning)
        return progress_steps.ready_message(spec, st, self._notebook_pod(), self._ray_version_warning)

    # ------------------------------------------------------------------ state
    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        if self._ray_ref:
            state["ray_cluster"] = {
                "name": self._ray_ref.name,
                "namespace": self._ray_ref.namespace,
                "backend": self._ray_ref.backend,
            }
            size = spec_size(self._ray_spec) if self._ray_spec else self._ray_size
            if size:
                state["ray_size"] = size
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        cluster = (state or {}).get("ray_cluster")
        self._ray_size = (state or {}).get("ray_size") or self._ray_size
        if cluster:
            self._ray_ref = ClusterRef(cluster["name"], cluster["namespace"], cluster.get("backend", ""))
            if not self._ray_running:
                self._ray_running = True
                metrics.reattached(self._ray_ref.backend or "unknown")
            self._ray_in_use()

    def clear_state(self) -> None:
        super().clear_state()
        self._ray_ref = None
        self._ray_spec = None
        self._ray_backend = None
        self._ray_version_warning = None
        self._ray_size = None
