"""Fault injection: failing, slowing or dropping matching API requests."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from .errors import ApiError, forbidden_message

_DEFAULT = object()


@dataclass
class Fault:
    verb: str  # "get", "list", "watch", "create", "update", "patch", "delete", "deletecollection" or "*"
    resource: str  # plural ("pods"), "pods/status", or "*"
    status: int | None = 500
    count: int | None = 1  # None: until cleared
    retry_after: int | None = None
    latency: float | None = None
    drop_watch: bool = False
    name: str | None = None
    namespace: str | None = None
    fired: int = 0

    def matches(self, verb: str, resource: str, namespace: str | None, name: str | None) -> bool:
        if self.count is not None and self.fired >= self.count:
            return False
        if self.verb not in ("*", verb):
            return False
        if self.resource not in ("*", resource):
            return False
        if self.name is not None and self.name != name:
            return False
        if self.namespace is not None and self.namespace != namespace:
            return False
        return True

    def error(self, verb: str, resource: str, namespace: str | None, name: str | None) -> ApiError | None:
        if self.status is None:
            return None
        plural, _, sub = resource.partition("/")
        if self.status == 429:
            ra = self.retry_after if self.retry_after is not None else 1
            return ApiError(
                429,
                "TooManyRequests",
                "Too many requests, please try again later.",
                {"retryAfterSeconds": ra},
                {"Retry-After": str(ra)},
            )
        if self.status == 403:
            return ApiError(
                403,
                "Forbidden",
                forbidden_message("system:anonymous", verb, plural, sub or None, "", namespace, name) + " (injected)",
                {**({"name": name} if name else {}), "kind": plural},
            )
        if self.status == 409:
            return ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {plural} "{name or ""}": '
                "the object has been modified; please apply your changes to the latest version "
                "and try again",
                {**({"name": name} if name else {}), "kind": plural},
            )
        if self.status == 404:
            return ApiError(
                404,
                "NotFound",
                f'{plural} "{name or ""}" not found',
                {**({"name": name} if name else {}), "kind": plural},
            )
        if self.status == 503:
            return ApiError(503, "ServiceUnavailable", "the server is currently unable to handle the request")
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else None
        return ApiError(
            self.status,
            "InternalError",
            "Internal error occurred: injected fault (k8semu)",
            {"causes": [{"message": "injected fault (k8semu)"}]},
            headers,
        )


@dataclass
class Faults:
    """Thread-safe list of pending faults plus a record of those that fired.

    ``injected``: list of dicts {verb, resource, namespace, name, status, latency, drop_watch}.
    """

    _faults: list[Fault] = field(default_factory=list)
    injected: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(
        self,
        verb: str,
        resource: str,
        status: Any = _DEFAULT,
        count: int | None = 1,
        retry_after: int | None = None,
        latency: float | None = None,
        drop_watch: bool = False,
        name: str | None = None,
        namespace: str | None = None,
    ) -> Fault:
        """Inject a fault for the next ``count`` matching requests (None = until cleared).

        ``status`` defaults to 500, or to None (no error) when only ``latency`` or
        ``drop_watch`` is given.
        """
        if status is _DEFAULT:
            status = None if (latency is not None or drop_watch) else 500
        f = Fault(verb, resource, status, count, retry_after, latency, drop_watch, name, namespace)
        with self._lock:
            self._faults.append(f)
        return f

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def pending(self) -> list[Fault]:
        with self._lock:
            return [f for f in self._faults if f.count is None or f.fired < f.count]

    def take(self, verb: str, resource: str, namespace: str | None, name: str | None) -> Fault | None:
        with self._lock:
            for f in self._faults:
                if f.matches(verb, resource, namespace, name):
                    f.fired += 1
                    self.injected.append(
                        {
                            "verb": verb,
                            "resource": resource,
                            "namespace": namespace,
                            "name": name,
                            "status": f.status,
                            "latency": f.latency,
                            "drop_watch": f.drop_watch,
                        }
                    )
                    return f
        return None
