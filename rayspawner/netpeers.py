"""NetworkPolicy peers an admin configures (DNS servers, API server addresses), checked
when the setting is made so that a typo never becomes an opening to every destination."""

from __future__ import annotations

import ipaddress
from typing import Any

from .errors import ConfigError

#: kube-dns/CoreDNS (kube-system, label k8s-app=kube-dns, on kubeadm, GKE, EKS, AKS, kind,
#: k3s) and OpenShift's DNS (openshift-dns, the DNS operator's daemonset label)
DEFAULT_DNS_PEERS: tuple[dict[str, Any], ...] = (
    {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
    },
    {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "openshift-dns"}},
        "podSelector": {"matchLabels": {"dns.operator.openshift.io/daemonset-dns": "default"}},
    },
)

_PEER_KEYS = {"podSelector", "namespaceSelector", "ipBlock"}


def check_cidrs(values: list[Any], setting: str) -> list[str]:
    for value in values:
        try:
            ipaddress.ip_network(str(value), strict=False)
        except ValueError:
            raise ConfigError(f"{setting}: {value!r} is not a CIDR such as 10.0.0.1/32.") from None
    return [str(v) for v in values]


def check_peers(peers: list[Any], setting: str) -> list[dict[str, Any]]:
    """Each a NetworkPolicyPeer; at least one (an empty ``to`` means any destination)."""
    if not peers:
        raise ConfigError(
            f"{setting} is empty, which a NetworkPolicy reads as *any* destination; name your DNS "
            "pods or addresses (to really allow any, say so: [{'ipBlock': {'cidr': '0.0.0.0/0'}}])."
        )
    for peer in peers:
        if not isinstance(peer, dict) or not peer or set(peer) - _PEER_KEYS:
            raise ConfigError(
                f"{setting}: {peer!r} is not a NetworkPolicyPeer (a dict of podSelector, "
                "namespaceSelector and/or ipBlock)."
            )
        if "ipBlock" in peer:
            block = peer["ipBlock"]
            if not isinstance(block, dict) or "cidr" not in block or len(peer) > 1:
                raise ConfigError(f"{setting}: {peer!r}: ipBlock needs a cidr and stands alone in its peer.")
            check_cidrs([block["cidr"], *block.get("except", [])], setting)
        for key in ("podSelector", "namespaceSelector"):
            if key in peer and not isinstance(peer[key], dict):
                raise ConfigError(f"{setting}: {peer!r}: {key} must be a label selector dict.")
    return peers
