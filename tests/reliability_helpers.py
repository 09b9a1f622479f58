"""Helpers for the reliability suite (tests/test_reliability_*.py).

- :func:`add_nth_fault`: a fault of the test cluster's fault proxy that fires on the
  *n*-th matching request, so every step of a spawn can be hit;
- :func:`hub_stop`: what JupyterHub's ``User.stop`` does with a spawner;
- :func:`hub_start`: what ``User.spawn`` does (start with ``start_timeout``, no
  cancellation on timeout, ``User.stop`` on any failure);
- :func:`leftovers`: everything a Ray cluster or notebook could leave behind;
- :func:`readable`: the failure reason a user sees, checked for traceback/API-dump text.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any


WRITES = ("create", "update", "patch", "delete", "deletecollection")
RAY_SELECTOR = "app.kubernetes.io/managed-by=rayspawner"


def add_nth_fault(
    kube: Any, verb: str, resource: str, nth: int, namespace: str, name: str | None = None, **kw: Any
) -> Any:
    """Inject a fault on the ``nth`` (1-based) request ``verb resource [name]`` in ``namespace``
    (``name`` None: any name; creates and lists carry none).

    ``kw`` as for ``kube.faults.add`` (status, latency, drop_watch, retry_after, count).
    """
    return kube.faults.add(verb, resource, name=name, namespace=namespace, skip=nth - 1, **kw)


def steps_of(request_log: list[tuple], namespace: str) -> list[tuple[str, str, int, str | None]]:
    """Each API request of one namespace as (verb, resource, nth occurrence of (verb, resource, name), name)."""
    seen: dict[tuple[str, str, str | None], int] = {}
    out = []
    for verb, resource, ns, name in request_log:
        if ns != namespace:
            continue
        seen[(verb, resource, name)] = seen.get((verb, resource, name), 0) + 1
        out.append((verb, resource, seen[(verb, resource, name)], name))
    return out


def readable(e: BaseException) -> str:
    """The message JupyterHub shows for a failed spawn/stop; asserts it is not a dump."""
    message = getattr(e, "jupyterhub_message", None) or str(e) or type(e).__name__
    for junk in ("Traceback", "HTTP response headers", "HTTP response body", "CIMultiDict", "<kubernetes"):
        assert junk not in message, f"unreadable failure reason ({type(e).__name__}): {message!r}"
    assert len(message) < 1200, message
    return message


def leftovers(emu: Any, namespace: str | None = None) -> list[tuple[str, str]]:
    """rayspawner objects, objects of any Ray cluster (KubeRay's too) and notebook pods in
    ``namespace`` (default: the test's own)."""
    namespace = namespace or emu.ns
    found: set[tuple[str, str]] = set()
    resources = ["pods", "services", "secrets", "deployments", "replicasets", "networkpolicies", "configmaps"]
    if getattr(emu, "kuberay", False):
        resources.append("rayclusters")
    for resource in resources:
        for selector in (RAY_SELECTOR, "ray.io/cluster"):
            for obj in emu.list_objects(resource, namespace, label_selector=selector):
                found.add((resource, obj["metadata"]["name"]))
    for obj in emu.list_objects("pods", namespace, label_selector="component=singleuser-server"):
        found.add(("pods", obj["metadata"]["name"]))
    if getattr(emu, "kuberay", False):
        for obj in emu.list_objects("rayclusters", namespace):
            found.add(("rayclusters", obj["metadata"]["name"]))
    return sorted(found)


async def settle(emu: Any, namespace: str | None = None, timeout: float = 10.0) -> list[tuple[str, str]]:
    """Wait (GC, terminating pods) until nothing is left; return what is left after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        left = leftovers(emu, namespace)
        if not left or time.monotonic() > deadline:
            return left
        await asyncio.sleep(0.1)


async def hub_stop(sp: Any, timeout: float = 60, record: dict | None = None) -> BaseException | None:
    """JupyterHub's ``User.stop``: ``poll()``; ``stop()`` only if that says running; any
    error is logged and the server forgotten anyway (state cleared). Returns the error;
    ``record["poll"]`` gets what ``poll()`` said."""
    err: BaseException | None = None
    try:
        status = await asyncio.wait_for(sp.poll(), timeout)
        if record is not None:
            record["poll"] = status
        if status is None:
            await asyncio.wait_for(sp.stop(), timeout)
    except Exception as e:  # noqa: BLE001 - JupyterHub logs it and goes on
        err = e
    finally:
        sp.clear_state()
    return err


@dataclass
class SpawnResult:
    url: str | None = None
    error: BaseException | None = None
    stop_error: BaseException | None = None
    timed_out: bool = False


async def hub_start(sp: Any, options: dict, timeout: float | None = None) -> SpawnResult:
    """JupyterHub's ``User.spawn``: ``start()`` bounded by ``start_timeout`` (the start
    future is *not* cancelled on timeout); on any failure ``User.stop``."""
    sp.user_options = dict(options)
    fut = asyncio.ensure_future(sp.start())
    res = SpawnResult()
    done, _ = await asyncio.wait({fut}, timeout=timeout or sp.start_timeout)
    if not done:
        res.timed_out = True
        res.error = asyncio.TimeoutError(f"did not start in {timeout or sp.start_timeout} s")
    elif fut.exception() is not None:
        res.error = fut.exception()
    else:
        res.url = fut.result()
        return res
    res.stop_error = await hub_stop(sp)
    if not fut.done():  # JupyterHub does not wait for it; we do, so nothing runs on after the test
        try:
            await asyncio.wait_for(asyncio.shield(fut), 30)
        except BaseException:  # noqa: BLE001
            pass
    return res
