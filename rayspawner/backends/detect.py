"""Which Kubernetes backend to use: ``ray_backend`` = auto | pods | kuberay.

``auto`` asks API discovery (``/apis/ray.io/v1``) whether ``rayclusters`` is
served. A definite answer is cached per process; a failed discovery request is
not cached, so the next spawn asks again.
"""

from __future__ import annotations

import logging

from kubernetes_asyncio.client.exceptions import ApiException
from kubespawner.clients import shared_client

from ..errors import ClusterStartError, ConfigError
from .kube import with_retries

_cache: dict[str, bool] = {}

KUBERAY_MISSING = (
    "KubeRay is not installed: the Kubernetes API server does not serve rayclusters.ray.io/v1, "
    "but c.RaySpawner.ray_backend is 'kuberay'. Install the KubeRay operator "
    "(helm install kuberay-operator kuberay/kuberay-operator) or set ray_backend to 'pods' or 'auto'."
)


async def kuberay_served(log: logging.Logger | None = None) -> bool:
    api = shared_client("CustomObjectsApi")
    host = api.api_client.configuration.host
    if host in _cache:
        return _cache[host]

    async def discover() -> bool:
        try:
            resources = await api.get_api_resources("ray.io", "v1")
        except ApiException as e:
            if e.status == 404:
                return False
            raise
        return any(r.name == "rayclusters" for r in resources.resources or [])

    try:
        served = await with_retries(discover, what="discover the KubeRay API (ray.io/v1)", timeout=15)
    except ApiException as e:
        raise ClusterStartError(f"Could not ask the Kubernetes API which Ray backend to use: HTTP {e.status}", reason="discovery") from None
    _cache[host] = served
    if log:
        log.info("KubeRay %s on %s", "detected" if served else "not installed", host)
    return served


def forget() -> None:
    """Drop cached answers (tests; or after installing KubeRay without restarting the hub)."""
    _cache.clear()


async def select_backend(wanted: str, log: logging.Logger | None = None) -> str:
    wanted = (wanted or "auto").lower()
    if wanted == "pods":
        return "pods"
    if wanted == "kuberay":
        if not await kuberay_served(log):
            _cache.clear()  # re-check next time: the admin may be installing it now
            raise ClusterStartError(KUBERAY_MISSING, reason="kuberay_missing")
        return "kuberay"
    if wanted == "auto":
        return "kuberay" if await kuberay_served(log) else "pods"
    raise ConfigError(f"ray_backend must be 'auto', 'pods' or 'kuberay', not {wanted!r}.")


__all__ = ["select_backend", "kuberay_served", "forget", "KUBERAY_MISSING"]
