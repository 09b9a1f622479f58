"""Kubernetes API calls for both Kubernetes backends: retries with bounded
backoff, and API errors turned into messages an admin can act on."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException
from kubespawner.clients import shared_client

from .. import aio, naming
from ..errors import ClusterStartError

log = logging.getLogger(__name__)

RETRY_STATUSES = {429, 500, 502, 503, 504}


@dataclass(frozen=True)
class Kind:
    kind: str
    group: str  # "" for core
    version: str
    plural: str
    api: str  # kubernetes_asyncio API class
    snake: str  # method suffix, e.g. "pod" -> create_namespaced_pod

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


KINDS = {
    k.kind: k
    for k in (
        Kind("Secret", "", "v1", "secrets", "CoreV1Api", "secret"),
        Kind("Service", "", "v1", "services", "CoreV1Api", "service"),
        Kind("Pod", "", "v1", "pods", "CoreV1Api", "pod"),
        Kind("Deployment", "apps", "v1", "deployments", "AppsV1Api", "deployment"),
        Kind("NetworkPolicy", "networking.k8s.io", "v1", "networkpolicies", "NetworkingV1Api", "network_policy"),
        Kind("RayCluster", "ray.io", "v1", "rayclusters", "CustomObjectsApi", ""),
        Kind("Event", "", "v1", "events", "CoreV1Api", "event"),
    )
}

KINDS_BY_PLURAL = {k.plural: k for k in KINDS.values()}


def transient(e: ApiException) -> bool:
    """Worth retrying: throttled (429) or a server-side failure (5xx)."""
    return e.status in RETRY_STATUSES


def _status_body(e: ApiException) -> dict[str, Any]:
    try:
        return json.loads(e.body) if e.body else {}
    except (TypeError, ValueError):
        return {}


def api_error(
    e: ApiException, verb: str, kind: Kind, namespace: str, name: str = "", *, rule_verbs: list[str] | None = None
) -> ClusterStartError:
    """A readable error for a failed API call (never includes request bodies).

    ``rule_verbs``: the verbs to name in the missing RBAC rule (default: ``[verb]``).
    """
    message = _status_body(e).get("message") or e.reason or "no message"
    target = f"{kind.plural}{'/' + name if name else ''} in namespace {namespace}"
    if e.status == 403:
        if "exceeded quota" in message:
            return ClusterStartError(f"Quota exceeded creating {target}: {message}", reason="quota")
        verbs = ", ".join(f'"{v}"' for v in (rule_verbs or [verb]))
        rule = f'apiGroups: ["{kind.group}"], resources: ["{kind.plural}"], verbs: [{verbs}]'
        return ClusterStartError(
            f'The hub is not allowed to {verb} {kind.plural} (API group "{kind.group}") in namespace '
            f"{namespace}: {message}. Add this rule to the hub's Role ({rule}); "
            "see jupyterhub_config/rbac/ for the complete Role.",
            reason="forbidden",
        )
    if e.status == 404 and kind.kind == "RayCluster":
        return ClusterStartError(
            "KubeRay is not installed: the API server does not serve rayclusters.ray.io/v1. Install the "
            "KubeRay operator (helm install kuberay-operator kuberay/kuberay-operator) or set "
            "c.RaySpawner.ray_backend = 'pods'.",
            reason="kuberay_missing",
        )
    return ClusterStartError(f"Kubernetes API error {e.status} on {verb} {target}: {message}", reason=f"api_{e.status}")


#: rayspawner's API requests in flight per event loop. A burst of spawns or stops queues
#: here, before a request's own timeout starts: queued inside aiohttp's connection pool
#: (100 per API group), under ``request_timeout``, requests of a 500-server burst timed
#: out before they were sent, and their retries fed the burst (and starved KubeSpawner's
#: own pod requests, which share the core/v1 pool).
MAX_IN_FLIGHT = 50
_gates: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore]" = weakref.WeakKeyDictionary()


def _gate() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    gate = _gates.get(loop)
    if gate is None:
        gate = _gates[loop] = asyncio.Semaphore(MAX_IN_FLIGHT)
    return gate


async def with_retries(
    call: Callable[[], Awaitable[Any]],
    *,
    what: str,
    timeout: float = 30.0,
    request_timeout: float | None = 10.0,
    also_retry: frozenset[int] = frozenset(),
) -> Any:
    """Run one API call, retrying transient failures (429 honouring Retry-After,
    5xx, timeouts, connection errors) with jittered exponential backoff, up to
    ``timeout`` seconds in all, and at least once: one transient fault on a request that was
    slow to fail (a loaded API server, a long queue here) must not fail a spawn.
    Other errors are raised at once.

    ``request_timeout=None``: the call bounds itself (it must not be cancelled midway).
    ``also_retry``: more statuses to retry (409 for idempotent deletes and merge patches)."""
    deadline = time.monotonic() + timeout
    delay = 0.2
    attempts = 0
    while True:
        attempts += 1
        gate = _gate()
        try:
            # the first attempt and the one retry that is always made may queue past the deadline
            await aio.wait_for(gate.acquire(), max(1.0 if attempts <= 2 else 0.01, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            raise ClusterStartError(
                f"Too many Kubernetes API requests queued in the hub while trying to {what}; "
                f"gave up after {int(timeout)} s.",
                reason="api_unavailable",
            ) from None
        try:
            return await (call() if request_timeout is None else aio.wait_for(call(), request_timeout))
        except ApiException as e:
            if e.status not in RETRY_STATUSES and e.status not in also_retry:
                raise
            wait = delay
            if e.status == 429 and e.headers and e.headers.get("Retry-After"):
                try:
                    wait = max(wait, float(e.headers["Retry-After"]))
                except ValueError:
                    pass
            problem = f"HTTP {e.status}"
        except (asyncio.TimeoutError, aiohttp.ClientError) as e:
            wait, problem = delay, type(e).__name__
        finally:
            gate.release()
        if attempts > 1 and time.monotonic() + wait > deadline:
            raise ClusterStartError(
                f"Kubernetes API kept failing while trying to {what} ({problem}); gave up after {int(timeout)} s.",
                reason="api_unavailable",
            )
        log.warning("%s: %s, retrying in %.1fs", what, problem, wait)
        await asyncio.sleep(wait * (0.8 + 0.4 * random.random()))
        delay = min(delay * 2, 5.0)


async def _unparsed(request: Awaitable[Any]) -> None:
    """Await a call made with ``_preload_content=False``: the response body is read
    and dropped instead of being deserialized into kubernetes_asyncio models (which
    was most of the hub's CPU per Ray object created or deleted); a non-2xx status
    raises ApiException with status, reason, headers and body, as the parsed path does."""
    response = await request
    data = await response.read()
    if not 200 <= response.status <= 299:
        e = ApiException(status=response.status, reason=response.reason)
        e.headers = response.headers
        e.body = data.decode("utf-8", "replace")
        raise e


def _other_server(existing: dict[str, str], wanted: dict[str, str]) -> str:
    """ "user X, server Y" when an existing object's owner labels name another server than
    the manifest's (empty when they agree or either lacks them)."""
    keys = (naming.LABEL_USERNAME, naming.LABEL_SERVERNAME)
    if not all(k in wanted for k in keys) or not any(k in existing for k in keys):
        return ""
    if all(existing.get(k) == wanted[k] for k in keys):
        return ""
    server = existing.get(naming.LABEL_SERVERNAME) or ""
    return f"user {existing.get(naming.LABEL_USERNAME)!r}, " + (f"server {server!r}" if server else "default server")


class KubeClient:
    """Typed helpers over kubernetes_asyncio for the kinds rayspawner manages."""

    def __init__(self, retry_timeout: float = 30.0, request_timeout: float = 10.0):
        self.retry_timeout = retry_timeout
        self.request_timeout = request_timeout
        #: (namespace, cluster) whose objects belong to another server, found by create():
        #: delete() leaves every object of that cluster's names alone
        self.foreign: set[tuple[str, str]] = set()

    def _is_foreign(self, namespace: str, name: str) -> bool:
        return any(ns == namespace and (name == c or name.startswith(c + "-")) for ns, c in self.foreign)

    def _api(self, kind: Kind) -> Any:
        return shared_client(kind.api)

    def _method(self, kind: Kind, verb: str) -> Callable[..., Awaitable[Any]]:
        api = self._api(kind)
        if kind.api == "CustomObjectsApi":
            fn = getattr(api, f"{verb}_namespaced_custom_object")
            return lambda namespace, *a, **kw: fn(kind.group, kind.version, namespace, kind.plural, *a, **kw)
        return getattr(api, f"{verb}_namespaced_{kind.snake}")

    async def _call(self, verb: str, kind: Kind, namespace: str, name: str, call: Callable[[], Awaitable[Any]]) -> Any:
        # a delete or a merge patch (no resourceVersion) is safe to repeat after a 409
        also_retry = frozenset({409}) if verb in ("delete", "patch") else frozenset()
        try:
            return await with_retries(
                call,
                what=f"{verb} {kind.kind} {namespace}/{name}",
                timeout=self.retry_timeout,
                request_timeout=self.request_timeout,
                also_retry=also_retry,
            )
        except ApiException as e:
            raise api_error(e, verb, kind, namespace, name) from None

    async def get(self, kind_name: str, namespace: str, name: str) -> dict[str, Any] | None:
        kind = KINDS[kind_name]
        fn = self._method(kind, "get" if kind.api == "CustomObjectsApi" else "read")

        async def call() -> Any:
            try:
                if kind.api == "CustomObjectsApi":
                    return await fn(namespace, name)
                obj = await fn(name, namespace)
                return self._api(kind).api_client.sanitize_for_serialization(obj)
            except ApiException as e:
                if e.status == 404 and kind.kind != "RayCluster":
                    return None
                if e.status == 404 and _status_body(e).get("details", {}).get("name") == name:
                    return None
                raise

        return await self._call("get", kind, namespace, name, call)

    async def list(self, kind_name: str, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        """Objects of a kind in a namespace matching a label selector, as plain dicts."""
        kind = KINDS[kind_name]
        fn = self._method(kind, "list")

        async def call() -> list[dict[str, Any]]:
            result = await fn(namespace, label_selector=label_selector)
            if isinstance(result, dict):
                return list(result.get("items") or [])
            return self._api(kind).api_client.sanitize_for_serialization(result).get("items") or []

        return await self._call("list", kind, namespace, "", call)

    async def create(self, manifest: dict[str, Any], *, dry_run: bool = False) -> None:
        """Create; on 409 adopt our own identical object, or remove a stale one of ours and retry.

        ``dry_run``: only ask the API server whether the create would be allowed (RBAC,
        validation, a name held by another server); nothing is created or removed."""
        kind = KINDS[manifest["kind"]]
        meta = manifest["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        fn = self._method(kind, "create")
        deadline = time.monotonic() + self.retry_timeout
        while True:
            try:
                await with_retries(
                    lambda: _unparsed(
                        fn(namespace, manifest, _preload_content=False, **({"dry_run": "All"} if dry_run else {}))
                    ),
                    what=f"create {kind.kind} {namespace}/{name}",
                    timeout=self.retry_timeout,
                    request_timeout=self.request_timeout,
                )
                return
            except ApiException as e:
                if e.status != 409:
                    raise api_error(e, "create", kind, namespace, name) from None
            existing = await self.get(kind.kind, namespace, name)
            if existing is None:
                continue  # gone meanwhile: try again
            labels = existing.get("metadata", {}).get("labels") or {}
            if labels.get(naming.LABEL_MANAGED_BY) != naming.MANAGED_BY:
                raise ClusterStartError(
                    f"A {kind.kind} named {name} already exists in namespace {namespace} and is not "
                    "managed by rayspawner; rename it or change ray_cluster_name_template.",
                    reason="conflict",
                )
            other = _other_server(labels, meta.get("labels") or {})
            if other:
                # never delete or replace another server's object: that would hand its cluster,
                # Secret or policy to this spawn; and this spawn's cleanup must not touch it either
                self.foreign.add((namespace, labels.get(naming.LABEL_CLUSTER) or name))
                log.error("%s %s/%s belongs to %s; refusing to replace it", kind.kind, namespace, name, other)
                raise ClusterStartError(
                    f"Cannot create the Ray cluster: {kind.kind} {name} in namespace {namespace} already "
                    f"belongs to another server ({other}). Nothing of it was changed. An admin must "
                    "check ray_cluster_name_template (or remove the leftover object).",
                    reason="name_conflict",
                )
            if dry_run:
                return  # this server's own object: the real create adopts or replaces it
            owners = {o.get("uid") for o in existing["metadata"].get("ownerReferences") or []}
            mine = {o.get("uid") for o in meta.get("ownerReferences") or []}
            if owners == mine and not existing["metadata"].get("deletionTimestamp"):
                return  # our own earlier attempt (e.g. a retried request) succeeded
            if time.monotonic() > deadline:
                raise ClusterStartError(
                    f"{kind.kind} {namespace}/{name} from an earlier server is still being removed; try again shortly.",
                    reason="conflict",
                )
            log.info("Replacing stale %s %s/%s left by an earlier server", kind.kind, namespace, name)
            await self.delete(kind.kind, namespace, name)
            await asyncio.sleep(0.2)

    async def patch(self, kind_name: str, namespace: str, name: str, body: dict[str, Any]) -> None:
        kind = KINDS[kind_name]
        fn = self._method(kind, "patch")
        await self._call(
            "patch",
            kind,
            namespace,
            name,
            lambda: _unparsed(
                fn(name, namespace, body, _preload_content=False)
                if kind.api != "CustomObjectsApi"
                else fn(namespace, name, body, _preload_content=False)
            ),
        )

    async def delete(self, kind_name: str, namespace: str, name: str, *, grace: int | None = None) -> bool:
        """Delete (background propagation); True if it existed. 404 is success."""
        kind = KINDS[kind_name]
        if self._is_foreign(namespace, name):
            log.warning("Not deleting %s %s/%s: it belongs to another server", kind.kind, namespace, name)
            return False
        fn = self._method(kind, "delete")
        body = {"propagationPolicy": "Background"}
        if grace is not None:
            body["gracePeriodSeconds"] = grace

        async def call() -> bool:
            try:
                if kind.api == "CustomObjectsApi":
                    await _unparsed(fn(namespace, name, body=body, _preload_content=False))
                else:
                    await _unparsed(fn(name, namespace, body=body, _preload_content=False))
                return True
            except ApiException as e:
                if e.status == 404:
                    return False
                raise

        return await self._call("delete", kind, namespace, name, call)
