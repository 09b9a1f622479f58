"""RaySpawner's overrides of KubeSpawner 7.1.0's private methods that only work around its
behaviour (docs/upstream.md, sections 1 and 2: each with its test and the upstream change).
A mixin before ``KubeSpawner`` in RaySpawner's bases; once KubeSpawner carries a fix, its
override goes."""

from __future__ import annotations

import asyncio
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from .backends.kube import KINDS, KINDS_BY_PLURAL, api_error, transient, with_retries


def _drop_unloaded(registry: dict, key: Any, reflector: Any) -> None:
    """Forget a reflector this start made whose first list did not succeed. KubeSpawner cancels
    the pod reflector's start when the events reflector's fails (and JupyterHub's timeout cancels
    both): ``ResourceReflector.start`` then never settles ``first_load_future``, so every later
    poll and spawn of the namespace would await it for ever."""
    first = reflector.first_load_future
    if first.done() and not first.cancelled() and first.exception() is None:
        return  # loaded: a later step failed, the reflector is fine
    if not first.done():
        first.set_exception(RuntimeError(f"the first list of {reflector.kind} was cancelled"))
        first.exception()  # retrieved: no "exception was never retrieved" when nobody waits
    registry.pop(key, None)
    asyncio.ensure_future(reflector.stop())


class KubeSpawnerFixes:
    """Pod deletes retried on 429/5xx/409; reflectors whose first list failed not kept."""

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
            before = registry.get(key)
            try:
                return await super(KubeSpawnerFixes, self)._start_reflector(
                    kind, reflector_class, replace=replace, **kwargs
                )
            except BaseException:
                failed = registry.get(key)
                # KubeSpawner makes its reflectors with parent=self: one another spawner (of the
                # same namespace) registered meanwhile is that spawner's to settle
                if failed is not None and failed is not before and getattr(failed, "parent", None) is self:
                    _drop_unloaded(registry, key, failed)
                elif failed is not None and failed.first_load_future.done():
                    first = failed.first_load_future
                    if first.cancelled() or first.exception() is not None:
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
