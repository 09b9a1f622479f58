"""Service names for the process node's pods: what cluster DNS and kube-proxy give a pod.

A real cluster answers ``<svc>.<ns>.svc.cluster.local`` with the Service's ClusterIP, and
kube-proxy sends a connection to it on to one of the Service's *ready* endpoints (or any
endpoint, with ``publishNotReadyAddresses``). The pods here share no DNS server and no
kube-proxy, so the node writes each pod's hosts file from the real EndpointSlice controller's
slices: a name maps straight to a ready endpoint's address, and to the ClusterIP (which
answers nothing here, as a Service without endpoints answers nothing there) while it has none.

The node holds kube-proxy's ClusterRole (``system:node-proxier``) for this, bound by
``testcluster up``: a kubelet alone may not list EndpointSlices.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .apiclient import Api

log = logging.getLogger("testcluster.node.services")

SERVICE_LABEL = "kubernetes.io/service-name"


class ServiceIndex:
    """Services and EndpointSlices of every namespace, kept by two watches."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.services: dict[tuple[str, str], dict[str, Any]] = {}
        self.slices: dict[tuple[str, str], dict[str, Any]] = {}
        self._tasks: list[asyncio.Task[Any]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.ensure_future(self._keep(self.services, "/api/v1/services")),
            asyncio.ensure_future(self._keep(self.slices, "/apis/discovery.k8s.io/v1/endpointslices")),
        ]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _keep(self, table: dict[tuple[str, str], dict[str, Any]], path: str) -> None:
        while True:
            try:
                async for type_, obj in self.api.list_and_watch(path, {}):
                    key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
                    if type_ == "DELETED":
                        table.pop(key, None)
                    else:
                        table[key] = obj
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - relist, as an informer does
                log.warning("watching %s: %s; relisting", path, e)
                await asyncio.sleep(1)

    def ready_addresses(self) -> dict[tuple[str, str], list[str]]:
        """(namespace, service) -> its ready endpoints' addresses, in one pass over the slices
        (the hosts files are rendered from this every half second for every process pod)."""
        out: dict[tuple[str, str], list[str]] = {}
        for (ns, _), sl in sorted(self.slices.items()):
            service = (sl["metadata"].get("labels") or {}).get(SERVICE_LABEL)
            for ep in sl.get("endpoints") or [] if service else []:
                if (ep.get("conditions") or {}).get("ready") is not False:  # nil counts as ready
                    out.setdefault((ns, service), []).extend(ep.get("addresses") or [])
        return out

    def hosts_for(self, namespace: str) -> dict[str, str]:
        """DNS names -> IP for every Service, short names for ``namespace``'s own."""
        ready = self.ready_addresses()
        hosts: dict[str, str] = {}
        for (ns, name), svc in sorted(self.services.items()):
            cluster_ip = (svc.get("spec") or {}).get("clusterIP")
            addresses = ready.get((ns, name))
            ip = addresses[0] if addresses else (cluster_ip if cluster_ip and cluster_ip != "None" else None)
            if ip is None:
                continue
            for host in (f"{name}.{ns}.svc.cluster.local", f"{name}.{ns}.svc", f"{name}.{ns}"):
                hosts[host] = ip
            if ns == namespace:
                hosts[name] = ip
        return hosts
