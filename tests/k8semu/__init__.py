"""k8semu: a loopback Kubernetes API server for tests (test support, not shipped).

Start one in-process with :class:`K8sEmu` (or the ``k8s_emu`` fixtures in
``tests.k8semu.fixtures``), or from a shell with
``python -m tests.k8semu serve --port PORT --kubeconfig PATH [--kuberay]``.
See README.md in this folder for what it emulates and what it does not.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import re
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import yaml
from aiohttp import web

from .crds import CRD_TYPE, check_document
from .errors import ApiError
from .faults import Faults
from testcluster.node.kubelet_api import Kubelet
from .node import Scheduler
from .patch import json_patch, merge_patch, strategic_merge_patch
from .rbac import Authorizer, load_rbac_documents
from .resources import Registry
from .selectors import parse_label_selector
from .server import ApiServer, WatchCounter
from .store import Store

__all__ = ["K8sEmu", "ApiError"]

log = logging.getLogger("k8semu")

DEFAULT_SIM_DELAYS = {
    "schedule": 0.01,
    "pull": 0.02,
    "create": 0.0,
    "start": 0.02,
    "ready": 0.0,
    "init": 0.02,
    "restart": 0.05,
}


def _log_reader(kubelet: Any) -> Callable[[dict[str, Any], str | None], Any] | None:
    """pods/log support: SimKubelet.pod_logs(pod, container) or ProcessKubelet.logs(ns, name, container)."""
    if hasattr(kubelet, "pod_logs"):
        return kubelet.pod_logs
    if hasattr(kubelet, "logs"):
        return lambda pod, c: kubelet.logs(pod["metadata"]["namespace"], pod["metadata"]["name"], c)
    return None


def _exec_starter(kubelet: Any) -> Callable[..., Any] | None:
    """pods/exec support: ProcessKubelet.exec_stream; None (a 400 answer) for the sim kubelet."""
    if not hasattr(kubelet, "exec_stream"):
        return None

    async def start(
        pod: dict[str, Any], container: str, argv: list[str], stdin: bool, stdout: bool, stderr: bool, tty: bool
    ) -> Any:
        md = pod["metadata"]
        return await kubelet.exec_stream(
            md["namespace"], md["name"], argv, container, stdin=stdin, stdout=stdout, stderr=stderr, tty=tty
        )

    return start


class K8sEmu:
    """A loopback Kubernetes API server running on its own thread and event loop.

    Args:
        kuberay: also serve ``ray.io/v1`` ``rayclusters`` and run the KubeRay simulation.
        kubelet: ``"sim"`` (timers only), ``"process"`` (``kubelet_process.ProcessKubelet``),
            or any object implementing ``kubelet_api.Kubelet``.
        rbac_files: YAML files of Roles/RoleBindings (and ClusterRoles/-Bindings, ServiceAccounts)
            to load; giving them (or ``tokens``) turns on RBAC mode.
        tokens: bearer token -> user name, e.g. ``{"hub-token": "system:serviceaccount:jhub:hub"}``.
        admin_token: token that bypasses RBAC (used by the default kubeconfig context).
        sim_delays: seconds for ``schedule``, ``pull``, ``create``, ``start``, ``ready``, ``init``, ``restart``.
        jitter: up to this many extra seconds (uniform) added to every simulated delay.
        port: 0 picks a free port.
        kubeconfig_path: where to write the kubeconfig (default: a temp dir).
        namespaces: namespaces that exist from the start (others are created on first write).
        history_size: watch events kept for resuming; older resourceVersions get 410 Gone.
        crds: CustomResourceDefinition documents to serve read-only (``crds.py``); None (the
            default): ``apiextensions.k8s.io`` is not served at all.
    """

    def __init__(
        self,
        kuberay: bool = False,
        kubelet: str | Kubelet = "sim",
        rbac_files: list[str | Path] | None = None,
        tokens: dict[str, str] | None = None,
        admin_token: str = "k8semu-admin-token",
        sim_delays: dict[str, float] | None = None,
        jitter: float = 0.0,
        port: int = 0,
        kubeconfig_path: str | Path | None = None,
        namespaces: tuple[str, ...] = ("default", "kube-system", "kube-public"),
        history_size: int = 20000,
        crds: list[dict[str, Any]] | None = None,
    ) -> None:
        self.kuberay = kuberay
        self._kubelet_spec = kubelet
        self.rbac = bool(rbac_files) or tokens is not None
        self.rbac_files = [Path(p) for p in rbac_files or []]
        self.tokens = dict(tokens or {})
        self.admin_token = admin_token
        self.sim_delays = {**DEFAULT_SIM_DELAYS, **(sim_delays or {})}
        self.jitter = jitter
        self.port = port
        self._tmpdir: tempfile.TemporaryDirectory | None = None
        self._kubeconfig_arg = Path(kubeconfig_path) if kubeconfig_path else None
        self.kubeconfig_path: Path | None = None
        self.registry = Registry(kuberay=kuberay)
        self.crds = [check_document(d) for d in crds] if crds is not None else None
        if self.crds is not None:
            self.registry.types.append(CRD_TYPE)
        self.faults = Faults()
        self._namespaces = namespaces
        self.history_size = history_size
        self.store: Store | None = None
        self.api: ApiServer | None = None
        self.kubelet: Kubelet | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._started = False
        self._controllers: list[Any] = []

    # ---- lifecycle -------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "K8sEmu":
        if self._started:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self.loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._astart())
            except BaseException as e:  # noqa: BLE001
                failure.append(e)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name="k8semu", daemon=True)
        self._thread.start()
        ready.wait(30)
        if failure:
            raise RuntimeError(f"k8semu failed to start: {failure[0]!r}") from failure[0]
        self._write_kubeconfigs()
        self._started = True
        log.info("k8semu serving on %s (kuberay=%s, rbac=%s)", self.url, self.kuberay, self.rbac)
        return self

    def _make_kubelet(self) -> Kubelet:
        spec = self._kubelet_spec
        if spec == "sim":
            from testcluster.node.kubelet_sim import SimKubelet

            return SimKubelet(self.sim_delays, self.jitter)
        if spec == "process":
            try:
                from testcluster.node.kubelet_process import ProcessKubelet  # type: ignore[import-not-found]
            except ImportError as e:
                raise RuntimeError(
                    "kubelet 'process' needs tests/k8semu/kubelet_process.py "
                    f"(ProcessKubelet), which is not available: {e}"
                ) from e
            return ProcessKubelet()
        if isinstance(spec, str):
            raise ValueError(f"unknown kubelet {spec!r}; use 'sim', 'process' or a Kubelet instance")
        return spec

    async def _astart(self) -> None:
        from .controllers import start_controllers

        self.kubelet = self._make_kubelet()
        self.store = Store(self.registry, history_size=self.history_size, namespaces=self._namespaces)
        for doc in self.crds or []:
            self.store.create(CRD_TYPE, None, doc)
        authorizer = None
        if self.rbac:
            authorizer = Authorizer(self.store, self.registry, self.tokens, self.admin_token)
            for doc in load_rbac_documents(self.rbac_files):
                self._create_sync(doc)
        self.api = ApiServer(self.store, self.registry, self.faults, authorizer)
        self.api.pod_logs = _log_reader(self.kubelet)
        self.api.pod_exec = _exec_starter(self.kubelet)
        Scheduler(self.store, self.kubelet, self.sim_delays, self.jitter)
        self._controllers = start_controllers(self.store, kuberay=self.kuberay)
        self._runner = web.AppRunner(self.api.app(), handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.api.address = f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if not self._started or self.loop is None:
            return
        self._started = False

        async def astop() -> None:
            assert self.store is not None and self.kubelet is not None
            for c in self._controllers:
                c.stop()
            await self.store.aclose()
            try:
                await asyncio.wait_for(self.kubelet.shutdown(), 60)
            except Exception:  # noqa: BLE001
                log.exception("kubelet shutdown failed")
            if self._runner is not None:
                await self._runner.cleanup()

        try:
            asyncio.run_coroutine_threadsafe(astop(), self.loop).result(90)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            if self._thread is not None:
                self._thread.join(10)
            if self._tmpdir is not None:
                self._tmpdir.cleanup()
                self._tmpdir = None

    def __enter__(self) -> "K8sEmu":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ---- kubeconfig ----------------------------------------------------
    def _kubeconfig(self, users: dict[str, str], current: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "preferences": {},
            "clusters": [{"name": "k8semu", "cluster": {"server": self.url}}],
            "users": [{"name": u, "user": {"token": t}} for u, t in users.items()],
            "contexts": [
                {"name": u, "context": {"cluster": "k8semu", "user": u, "namespace": "default"}} for u in users
            ],
            "current-context": current,
        }

    @staticmethod
    def _ctx_name(user: str) -> str:
        return (
            re.sub(
                r"[^A-Za-z0-9.-]+", "-", user.split(":")[-1] if user.startswith("system:serviceaccount:") else user
            ).strip("-")
            or "user"
        )

    def _dir(self) -> Path:
        if self._tmpdir is None:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="k8semu-")
        return Path(self._tmpdir.name)

    def _write_kubeconfigs(self) -> None:
        users = {"k8semu-admin": self.admin_token}
        for tok, user in self.tokens.items():
            users[self._ctx_name(user)] = tok
        path = self._kubeconfig_arg or (self._dir() / "kubeconfig")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self._kubeconfig(users, "k8semu-admin")))
        os.chmod(path, 0o600)
        self.kubeconfig_path = path

    def kubeconfig_for(self, token: str) -> Path:
        """A kubeconfig file whose only context authenticates with ``token``."""
        user = self._ctx_name(self.tokens.get(token, "token"))
        path = self._dir() / f"kubeconfig-{user}-{abs(hash(token)) % 10**8}"
        path.write_text(yaml.safe_dump(self._kubeconfig({user: token}, user)))
        return path

    # ---- thread-safe helpers -------------------------------------------
    def call(self, fn: Callable[[Store], Any], timeout: float = 30) -> Any:
        """Run ``fn(store)`` on the emulator's loop and return its result."""
        if not self._started or self.loop is None:
            raise RuntimeError("K8sEmu is not started")
        if threading.current_thread() is self._thread:  # already on the emulator's loop
            return fn(self.store)  # type: ignore[arg-type]

        async def run() -> Any:
            return fn(self.store)  # type: ignore[arg-type]

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    def _create_sync(self, manifest: dict[str, Any]) -> dict[str, Any]:
        assert self.store is not None
        rtype = self.registry.by_kind(manifest.get("apiVersion", ""), manifest.get("kind", ""))
        if rtype is None:
            raise KeyError(f"unknown kind {manifest.get('apiVersion')}/{manifest.get('kind')}")
        return self.store.create(rtype, (manifest.get("metadata") or {}).get("namespace"), manifest)

    def list_objects(
        self, resource: str, namespace: str | None = None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        rtype = self.registry.by_name(resource)
        reqs = parse_label_selector(label_selector)
        return self.call(lambda st: st.list(rtype, namespace, reqs)[0])

    def get_object(self, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The object, or None if it does not exist."""
        rtype = self.registry.by_name(resource)
        return self.call(lambda st: copy.deepcopy(st.find(rtype, namespace, name)))

    def create_object(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Create from a manifest (namespace defaults to "default"); raises ApiError."""
        return self.call(lambda st: copy.deepcopy(self._create_sync(manifest)))

    def delete_object(
        self,
        resource: str,
        namespace: str | None,
        name: str,
        grace_period_seconds: int | None = None,
        propagation_policy: str | None = None,
    ) -> dict[str, Any]:
        rtype = self.registry.by_name(resource)
        return self.call(lambda st: st.delete(rtype, namespace, name, grace_period_seconds, propagation_policy)[0])

    def patch_object(
        self,
        resource: str,
        namespace: str | None,
        name: str,
        patch: Any,
        patch_type: str = "merge",
        subresource: str | None = None,
    ) -> dict[str, Any]:
        """Patch (``patch_type``: merge, json or strategic); ``subresource="status"`` patches status."""
        rtype = self.registry.by_name(resource)
        fn = {"merge": merge_patch, "json": json_patch, "strategic": strategic_merge_patch}[patch_type]
        return self.call(
            lambda st: st.update(
                rtype,
                namespace,
                name,
                fn(st.get(rtype, namespace, name), patch),
                subresource=subresource,
                check_rv=False,
            )
        )

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 10, interval: float = 0.02) -> Any:
        """Poll ``predicate()`` until truthy; return its value or raise TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            val = predicate()
            if val:
                return val
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met within {timeout}s")
            time.sleep(interval)

    @property
    def request_log(self) -> list[tuple[str, str, str | None, str | None]]:
        """(verb, resource, namespace, name) of every API request since the last reset.

        ``resource`` is the plural, with ``/status`` or ``/log`` for subresources."""
        assert self.api is not None
        with self.api.log_lock:
            return list(self.api.request_log)

    def reset_request_log(self) -> None:
        assert self.api is not None
        with self.api.log_lock:
            self.api.request_log.clear()

    @property
    def open_watches(self) -> WatchCounter:
        """``.current`` and ``.peak`` count of open watch connections (``.reset_peak()``)."""
        assert self.api is not None
        return self.api.watches
