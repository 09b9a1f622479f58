"""The Ray pods' egress settings: DNS only to the configured peers, the autoscaler's API server
egress only where the admin says; bad values are refused when set (never widened to "any")."""

from __future__ import annotations

import pytest

from rayspawner.config import RayConfig
from rayspawner.errors import ConfigError
from rayspawner.manifests import common
from rayspawner.netpeers import DEFAULT_DNS_PEERS

from .test_options import spec_for

DNS_PORTS = [{"protocol": proto, "port": port} for port in (53, 5353) for proto in ("UDP", "TCP")]


def dns_rules(spec) -> list[dict]:
    egress = common.network_policy(spec, None)["spec"]["egress"]
    return [r for r in egress if any(p.get("port") in (53, 5353) for p in r.get("ports", []))]


def test_dns_egress_names_cluster_dns_only():
    [rule] = dns_rules(spec_for({"profile": "ray-fixed"}))
    assert rule["ports"] == DNS_PORTS
    assert rule["to"] == list(DEFAULT_DNS_PEERS)  # kube-system/kube-dns and openshift-dns/dns-default
    assert rule["to"] and all("ipBlock" not in p for p in rule["to"])


def test_dns_peers_are_configurable():
    cache = {"ipBlock": {"cidr": "169.254.20.10/32"}}
    [rule] = dns_rules(spec_for({"profile": "ray-fixed"}, ray_network_policy_dns_peers=[cache]))
    assert rule["to"] == [cache]


@pytest.mark.parametrize(
    "peers,fragment",
    [
        ([], "any\\* destination"),
        ([{}], "not a NetworkPolicyPeer"),
        (["kube-system"], "not a NetworkPolicyPeer"),
        ([{"namespace": "kube-system"}], "not a NetworkPolicyPeer"),
        ([{"ipBlock": {"cidr": "not-an-ip"}}], "not a CIDR"),
        ([{"ipBlock": {}}], "needs a cidr"),
        ([{"podSelector": "k8s-app=kube-dns"}], "label selector dict"),
    ],
)
def test_bad_dns_peers_are_refused(peers, fragment):
    with pytest.raises(ConfigError, match=f"ray_network_policy_dns_peers.*{fragment}"):
        RayConfig(ray_network_policy_dns_peers=peers)


def test_bad_api_server_cidrs_are_refused():
    assert RayConfig(ray_autoscaler_api_server_cidrs=["10.96.0.1/32", "fd00::1"]).ray_autoscaler_api_server_cidrs
    with pytest.raises(ConfigError, match="ray_autoscaler_api_server_cidrs: 'kubernetes.default' is not a CIDR"):
        RayConfig(ray_autoscaler_api_server_cidrs=["kubernetes.default"])
