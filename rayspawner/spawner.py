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
from typing import Any

from kubernetes_asyncio.client import ApiClient, V1Container, V1Pod, V1Volume, V1VolumeMount
from kubernetes_asyncio.client.exceptions import ApiException
from kubespawner import KubeSpawner
from kubespawner.objects import get_k8s_model
from kubespawner.reflector import ResourceReflector
from traitlets import TraitError

from . import aio, naming, quotas
from .backends.base import ClusterBackend, ClusterStatus
from .backends.pods import reported_versions
from .backends.detect import kuberay_served, select_backend
from .backends.isolation import notebook_isolation
from .backends.kube import KINDS, KubeClient, api_error, transient
from .config import RayConfig
from .env import notebook_env
from .errors import ClusterStartError, ConfigError, InvalidOptions
from .hubpages import HubPagesMixin
from .kubespawner_fixes import KubeSpawnerFixes
from .progress import ProgressMixin
from .manifests import notebook as notebook_manifests
from .manifests.common import owner_reference, version_init_container, wants_version_check
from .options import check_user_options, resolve_spec
from .profiles import initialized_profiles, options_may_enable_ray
from .reflector_index import pod_events
from .registry import hub_process
from .session import RayClusterSession, gather_then_raise
from .spec import RayClusterSpec
from .versions_check import compare_versions


#: the spawner whose _start runs in the current task (or a task it started)
_starting: contextvars.ContextVar = contextvars.ContextVar("rayspawner_starting", default=None)


class RayPodReflector(ResourceReflector):
    """One shared watch per namespace over every rayspawner-managed pod."""

    kind = "pods"

    @property
    def pods(self) -> dict[str, dict]:
        return self.resources


class RaySpawner(HubPagesMixin, ProgressMixin, KubeSpawnerFixes, RayConfig, KubeSpawner):
    """KubeSpawner that also starts the user's own Ray cluster when ``ray_enabled``."""

    def __init__(self, *args: Any, **kwargs: Any):
        try:
            super().__init__(*args, **kwargs)
        except TraitError as e:  # a bad value in jupyterhub_config.py: say so, not "Internal Server Error"
            raise ConfigError(f"Invalid RaySpawner configuration in jupyterhub_config.py: {e}") from None
        #: this server's Ray cluster: everything about it, and its lifecycle
        self.ray_session = RayClusterSession(
            self.log, lambda: self._log_name, lambda kind: self._backend_for(kind or self.ray_backend)
        )

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
        spec = self.ray_session.spec
        if spec:
            backend = await self._backend_for(self.ray_backend)
            self.ray_session.use(spec, backend)
            self.log.info("Ray cluster %s for %s (%s backend)", spec.name, self._log_name, backend.kind)
            self._ray_in_use()

    async def load_ray_options(self) -> RayClusterSpec | None:
        """Apply the chosen profile and validate everything; no I/O.

        Raises InvalidOptions (HTTP 400) with a message for the user.
        """
        self.ray_session.use(None)  # a refused respawn must not act on an earlier server's spec
        check_user_options(self.user_options or {}, await initialized_profiles(self))
        try:
            await super().load_user_options()
        except InvalidOptions:
            raise  # a ValueError too, already worded for the user
        except (ValueError, KeyError, TraitError) as e:
            raise InvalidOptions(f"Invalid server options: {e}") from None
        if self.ray_enabled:
            # quotas.admit: the user's totals across servers; the session holds the spec at
            # once (that is the reservation)
            self.ray_session.use(
                quotas.admit(
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
            )
        return self.ray_session.spec

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
            from .backends.kuberay import REFLECTOR_KIND, KubeRayBackend, watch_ray_clusters

            clusters = await watch_ray_clusters(
                self.__class__.reflectors,
                self._get_reflector_key(REFLECTOR_KIND),
                parent=self,
                namespace=self.namespace,
                omit_namespace=self.enable_user_namespaces,
                retry_timeout=self.k8s_api_request_retry_timeout,
            )
            return KubeRayBackend(self._kube(), self._ray_pods, clusters)
        from .backends.pods import PodsBackend

        return PodsBackend(self._kube(), self._ray_pods)

    # ------------------------------------------------------------------ start
    def get_env(self) -> dict[str, Any]:
        env = super().get_env()
        if self.ray_session.spec:
            env.update(notebook_env(self.ray_session.spec))
        return env

    async def get_pod_manifest(self):
        pod = await super().get_pod_manifest()
        spec = self.ray_session.spec
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
        """KubeSpawner's, plus: the token Secret before the pod, the cluster right after it
        (owned by the pod: its UID comes from the create response, no waiting), and 429/5xx
        retried with readable errors (KubeSpawner retries only timeouts and 409)."""
        session = self.ray_session
        spec = session.spec
        if spec is None or session.backend is None:
            try:
                return await super()._make_create_pod_request(pod, request_timeout)
            except ApiException as e:
                return self._pod_create_error(e, pod)
        if not session.prepared:
            if spec.network_policy and spec.notebook_selector:
                # the pod's final labels are known only now (after modify_pod_hook)
                types = await notebook_isolation(self._kube(), self.namespace, pod.metadata.labels or {})
                session.spec = dataclasses.replace(spec, notebook_policy_types=types)
            await session.prepare()
        try:
            created = await aio.wait_for(self.api.create_namespaced_pod(self.namespace, pod), request_timeout)
        except asyncio.TimeoutError:
            return False
        except ApiException as e:
            if e.status == 409:  # as KubeSpawner: an earlier pod of this name is removed, then retried
                self.log.info("Found existing pod %s, attempting to kill", pod.metadata.name)
                await self.stop(True)
                return False
            return self._pod_create_error(e, pod)
        session.create_in_background(owner_reference(pod.metadata.name, created.metadata.uid))
        return True

    def _pod_create_error(self, e: ApiException, pod: V1Pod) -> bool:
        if transient(e):
            self.log.warning("Creating pod %s: HTTP %s, retrying", pod.metadata.name, e.status)
            return False
        raise api_error(e, "create", KINDS["Pod"], self.namespace, pod.metadata.name) from None

    async def _start(self):
        _starting.set(self)  # this task's context (and its subtasks'): see _cancel_pending_start
        # KubeSpawner's _start loads the user's options itself: whether Ray is on is known
        # only inside it, so the session runs every start (without Ray it only calls _start)
        return await self.ray_session.start(
            super()._start,
            timeout=self.start_timeout,
            stop_timeout=self.ray_stop_timeout,
            wait_for_head=self.ray_wait_for_head,
            when_ready=self._last_checks,
        )

    async def _last_checks(self, status: ClusterStatus, deadline: float) -> None:
        if self.ray_wait_for_head:
            await self._wait_notebook_joined(deadline)
        await self._check_versions(status, deadline)

    async def _wait_notebook_joined(self, deadline: float) -> None:
        """Driver mode: "ready" means a bare ray.init() works at once, so the notebook's own
        Ray node (which joins only once the head is up) must have joined too."""
        spec = self.ray_session.spec
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
        session = self.ray_session
        spec = session.spec
        if not spec or not session.backend or not wants_version_check(spec):
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
            status = await session.backend.status(spec)
        problem = compare_versions(notebook, cluster, spec.notebook_image, spec.image)
        if problem and spec.version_check == "error":
            raise ClusterStartError(problem, reason="version_mismatch")
        if problem:
            self.log.warning(problem)
            session.version_warning = problem

    # ------------------------------------------------------------- stop/poll
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
        if not self.ray_session.ref:
            return await super().stop(now)
        await gather_then_raise(super().stop(now), self.ray_session.teardown(self.ray_stop_timeout))

    async def poll(self):
        if not self._ray_use_checked:
            # once per spawner object: at hub start-up JupyterHub polls every stored server,
            # including one whose Ray spawn the previous hub process died in (no state yet)
            self._ray_use_checked = True
            if self.ray_session.ref or options_may_enable_ray(self, self.user_options or {}):
                self._ray_in_use()
        start = getattr(self, "_start_future", None)
        if start is not None and not start.done():
            return None  # JupyterHub polls a pending server only to stop it: stop() cancels the start
        session = self.ray_session
        status = await super().poll()
        if status is not None or not session.ref:
            if status is not None and session.ref:
                # the notebook is gone behind our back: make sure its cluster goes too
                await session.teardown(self.ray_stop_timeout)
            return status
        problem = await session.health(self.ray_head_restart_limit)
        if problem:
            self.log.error("Ray cluster %s: %s; reporting the server as failed", session.ref.name, problem)
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
        task = hub_process.sweepers.get(key)
        if task is None or task.done():
            hub_process.sweepers[key] = asyncio.ensure_future(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        from .sweep import BUILTIN_KINDS, SWEPT_KINDS

        while True:
            try:
                # a hub set to plain pods makes no RayCluster, and its Role (role-pods.yaml
                # alone) may not list them even where KubeRay is installed
                kuberay = self.ray_backend != "pods" and await kuberay_served(self.log)
                await self.sweep_orphans(SWEPT_KINDS if kuberay else BUILTIN_KINDS)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a failed sweep must never hurt spawning
                self.log.warning("Orphan sweep in %s failed: %s", self.namespace, e)
            await asyncio.sleep(self.ray_orphan_sweep_interval)

    async def sweep_orphans(self, kinds=None) -> list[tuple[str, str]]:
        """One sweep of this namespace; returns what was deleted."""
        from .sweep import BUILTIN_KINDS, sweep

        await self._start_watching_pods()
        live = {
            p["metadata"]["uid"] for p in self.pod_reflector.pods.values() if not p["metadata"].get("deletionTimestamp")
        }
        return await sweep(
            self._kube(),
            self.namespace,
            live,
            kinds=kinds or BUILTIN_KINDS,
            grace_seconds=self.ray_orphan_grace_seconds,
            secrets=self.ray_orphan_sweep_secrets,
        )

    # ------------------------------------------------------------------ state
    def get_state(self) -> dict[str, Any]:
        return {**super().get_state(), **self.ray_session.to_state()}

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        if self.ray_session.load_state(state):
            self._ray_in_use()

    def clear_state(self) -> None:
        super().clear_state()
        self.ray_session.forget()
