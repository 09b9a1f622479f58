"""Who can reach whom: the per-cluster NetworkPolicy, evaluated (tests/netpol.py) over
the pods and policies the real test cluster holds after real spawns, for both backends (the
KubeRay operator makes its pods from our pod templates, labels included). There is no CNI on the
test cluster: the evaluator answers as a conforming one would.

Users: alice@example.org (default server, plus a second named server "dev") and bob, each with
a Ray cluster of a head and two workers; bystanders: another pod in the namespace, a pod in
another namespace, cluster DNS (kube-system, port 53) and OpenShift's DNS (openshift-dns,
pods listen on 5353 behind the 53 Service). The Zero-to-JupyterHub singleuser policy
is rendered from ``jupyterhub_config/z2jh/values.yaml`` and evaluated together with ours.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from rayspawner import naming
from rayspawner.spec import (
    DASHBOARD_AGENT_GRPC_PORT,
    DASHBOARD_AGENT_PORT,
    MAX_WORKER_PORT,
    MIN_WORKER_PORT,
    NODE_MANAGER_PORT,
    OBJECT_MANAGER_PORT,
    RAY_PORTS,
    RUNTIME_ENV_AGENT_PORT,
)

from testcluster.client import NODE_LABEL, ApiError
from testcluster.fixtures import Kube

from .netpol import Network, selector_matches
from .spawner_fixtures import RESTRICTED_TRAITS, wait_until

ROOT = Path(__file__).resolve().parent.parent
VALUES = ROOT / "jupyterhub_config" / "z2jh" / "values.yaml"
RAY = {"profile": "ray", "workers": "2"}
#: what a notebook in driver mode (the default) needs on its Ray pods: GCS, Ray Client, dashboard /
#: Jobs API, and, as a node and a direct driver, the raylets' node and object managers and the
#: worker port range (samples: both ends and the middle)
CLIENT_NOTEBOOK_PORTS = [RAY_PORTS["gcs"], RAY_PORTS["client"], RAY_PORTS["dashboard"]]
NOTEBOOK_PORTS = sorted(
    [*CLIENT_NOTEBOOK_PORTS, NODE_MANAGER_PORT, OBJECT_MANAGER_PORT, MIN_WORKER_PORT, 10500, MAX_WORKER_PORT]
)
#: what the cluster's pods need on the notebook's own node: node and object managers, dashboard
#: agent (HTTP and gRPC) and the worker range (the driver's own core worker listens there)
NOTEBOOK_NODE_PORTS = sorted(
    [
        NODE_MANAGER_PORT,
        OBJECT_MANAGER_PORT,
        DASHBOARD_AGENT_PORT,
        DASHBOARD_AGENT_GRPC_PORT,
        MIN_WORKER_PORT,
        10500,
        MAX_WORKER_PORT,
    ]
)
#: every port a Ray node listens on (the pinned ones) and some it never should (outside the ranges)
ALL_RAY_PORTS = sorted(
    {*RAY_PORTS.values(), *NOTEBOOK_NODE_PORTS, RUNTIME_ENV_AGENT_PORT, MAX_WORKER_PORT + 1, 12345, 19999, 45678}
)
OTHER_PORTS = [22, 80, 443, 8888]
#: the labels z2jh's KubeSpawner config gives notebook pods (chart matchLabels: app, release, component)
Z2JH_LABELS = {"app": "jupyterhub", "heritage": "jupyterhub", "release": "jhub", "chart": "jupyterhub-4.3.1"}


def pod_doc(ns: str, name: str, labels: dict[str, str], ports: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A pod that passes the restricted Pod Security Standard, on the sim node wherever it is."""
    c: dict[str, Any] = {
        "name": "c",
        "image": "busybox",
        "securityContext": {**RESTRICTED_TRAITS["container_security_context"], "runAsUser": 1000},
    }
    if ports:
        c["ports"] = ports
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {
            "nodeSelector": {NODE_LABEL: "sim"},
            "securityContext": RESTRICTED_TRAITS["pod_security_context"],
            "containers": [c],
        },
    }


class World:
    """The test's namespaces and bystander pods: ``places[role] = (namespace, pod name)``. kube-system
    and openshift-dns are cluster-wide names (DNS policies select them by name), shared with other
    tests: pods there carry the test namespace in their names and are deleted afterwards."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.namespaces = [kube.ns]
        self.places: dict[str, tuple[str, str]] = {}
        self._made_namespaces: list[str] = []
        self._shared_pods: list[tuple[str, str]] = []

    def namespace(self, prefix: str, labels: dict[str, str] | None = None) -> str:
        ns = self.kube.create_namespace(prefix)
        self._made_namespaces.append(ns)
        if labels:
            self.kube.patch_object("namespaces", None, ns, {"metadata": {"labels": labels}})
        self.namespaces.append(ns)
        return ns

    def shared_namespace(self, name: str) -> str:
        if self.kube.get_object("namespaces", None, name) is None:
            try:
                self.kube.create_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
            except ApiError as e:
                if e.code != 409:  # another test made it meanwhile
                    raise
        self.namespaces.append(name)
        return name

    def pod(self, role: str, ns: str, labels: dict[str, str], ports: list[dict[str, Any]] | None = None) -> None:
        shared = ns not in self._made_namespaces and ns != self.kube.ns
        name = f"{role}-{self.kube.ns}" if shared else role
        self.kube.create_object(pod_doc(ns, name, labels, ports))
        if shared:
            self._shared_pods.append((ns, name))
        self.places[role] = (ns, name)

    def network(self) -> Network:
        return Network.from_cluster(self.kube, self.namespaces)

    def cleanup(self) -> None:
        for ns, name in self._shared_pods:
            self.kube.delete_object("pods", ns, name, grace_period_seconds=0)
        for ns in self._made_namespaces:
            self.kube.delete_namespace(ns)


@pytest.fixture
def world(kube: Kube) -> Iterator[World]:
    w = World(kube)
    try:
        yield w
    finally:
        w.cleanup()


def bystanders(world: World) -> None:
    ns, elsewhere = world.kube.ns, world.namespace("elsewhere")
    kube_system, openshift_dns = world.shared_namespace("kube-system"), world.shared_namespace("openshift-dns")
    world.pod("random", ns, {"app": "random"})
    # a pod that copies the Ray labels but belongs to no user (e.g. someone's own "ray-head")
    world.pod("lookalike", ns, {naming.LABEL_MANAGED_BY: "someone-else", naming.LABEL_COMPONENT: naming.COMPONENT_HEAD})
    world.pod("intruder", elsewhere, {"app": "x"})
    world.pod(
        "hub",
        ns,
        {"app": "jupyterhub", "release": "jhub", "component": "hub"},
        [{"name": "http", "containerPort": 8081}],
    )
    dns = [
        {"name": "dns", "containerPort": 53, "protocol": "UDP"},
        {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
    ]
    world.pod("coredns", kube_system, {"k8s-app": "kube-dns"}, dns)
    odns = [
        {"name": "dns", "containerPort": 5353, "protocol": "UDP"},
        {"name": "dns-tcp", "containerPort": 5353, "protocol": "TCP"},
    ]
    world.pod("dns-default", openshift_dns, {"dns.operator.openshift.io/daemonset-dns": "default"}, odns)
    world.pod("fake-dns", elsewhere, {"k8s-app": "kube-dns"}, dns)  # the DNS label, in a namespace anyone may use
    world.pod("kube-other", kube_system, {"k8s-app": "metrics-server"}, dns)


async def spawn_all(kube: Kube, factory: Any, backend: str, **traits: Any) -> dict[str, Any]:
    made = {
        "A": factory(kube, "alice@example.org", ray_backend=backend, **traits),
        "A2": factory(kube, "alice@example.org", "dev", ray_backend=backend, **traits),
        "B": factory(kube, "bob", ray_backend=backend, **traits),
    }
    for sp in made.values():
        sp.user_options = dict(RAY)
    await asyncio.wait_for(asyncio.gather(*(sp.start() for sp in made.values())), 60)
    return made


def cluster_pods(net: Network, sp: Any, component: str) -> list[dict[str, Any]]:
    labels = {naming.LABEL_CLUSTER: sp.ray_session.spec.name, naming.LABEL_COMPONENT: component}
    return net.select(labels, sp.namespace)


async def settled(world: World, spawners: dict[str, Any]) -> Network:
    """Wait until every Ray pod (head + 2 workers per cluster) and bystander has an IP."""
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        net = world.network()
        counts = [len(cluster_pods(net, sp, naming.COMPONENT_WORKER)) for sp in spawners.values()]
        ips = all((p.get("status") or {}).get("podIP") for p in net.pods)
        heads = [len(cluster_pods(net, sp, naming.COMPONENT_HEAD)) for sp in spawners.values()]
        if counts == [2] * len(spawners) and heads == [1] * len(spawners) and ips:
            return net
        assert asyncio.get_running_loop().time() < deadline, (counts, heads)
        await asyncio.sleep(0.1)


def who(net: Network, spawners: dict[str, Any], world: World) -> dict[str, Any]:
    roles: dict[str, Any] = {}
    for key, sp in spawners.items():
        roles[f"{key}.notebook"] = net.pod(sp.namespace, sp.pod_name)
        roles[f"{key}.head"] = cluster_pods(net, sp, naming.COMPONENT_HEAD)[0]
        for i, w in enumerate(cluster_pods(net, sp, naming.COMPONENT_WORKER)):
            roles[f"{key}.worker{i}"] = w
    for role, (ns, name) in world.places.items():
        roles[role] = net.pod(ns, name)
    return roles


def reachable(
    net: Network, roles: dict[str, Any], src: str, dst: str, ports: list[int], proto: str = "TCP"
) -> list[int]:
    return [p for p in ports if net.allowed(roles[src], roles[dst], p, proto)]


@pytest.fixture(params=["pods", "kuberay"])
def backend(request: Any) -> str:
    return request.param


@pytest.mark.asyncio
async def test_cluster_policy_semantics(backend, kube, world, ray_spawner_factory):
    bystanders(world)
    spawners = await spawn_all(kube, ray_spawner_factory, backend, ray_orphan_sweep_interval=0)
    net = await settled(world, spawners)
    r = who(net, spawners, world)
    ray_pods = {k for k in r if k.split(".")[-1].startswith(("head", "worker"))}

    # the notebook selector really matches the notebook pod KubeSpawner made (escaped user name)
    for key, sp in spawners.items():
        assert selector_matches(
            {"matchLabels": sp.ray_session.spec.notebook_selector}, r[f"{key}.notebook"]["metadata"]["labels"]
        )
        assert net.selecting(r[f"{key}.head"], "Ingress") and net.selecting(r[f"{key}.head"], "Egress")

    # A's notebook reaches A's head on exactly the notebook ports (not metrics, not the rest)
    assert reachable(net, r, "A.notebook", "A.head", ALL_RAY_PORTS) == sorted(NOTEBOOK_PORTS), net.explain(
        r["A.notebook"], r["A.head"], 8080
    )

    # nobody else reaches A's Ray pods, on any port
    for src in (
        "B.notebook",
        "A2.notebook",
        "random",
        "lookalike",
        "intruder",
        "hub",
        "B.head",
        "B.worker0",
        "A2.head",
    ):
        for dst in ("A.head", "A.worker0", "A.worker1"):
            open_ports = reachable(net, r, src, dst, ALL_RAY_PORTS + OTHER_PORTS)
            assert open_ports == [], (src, dst, open_ports, net.explain(r[src], r[dst], open_ports[0]))
            assert reachable(net, r, src, dst, [53], "UDP") == []

    # inside A's cluster everything is open, both ways
    for src, dst in itertools.permutations(["A.head", "A.worker0", "A.worker1"], 2):
        assert reachable(net, r, src, dst, ALL_RAY_PORTS) == ALL_RAY_PORTS, (src, dst)

    # A's Ray pods reach A's notebook (its own Ray node) on exactly that node's ports
    for src in ("A.head", "A.worker0", "A.worker1"):
        assert reachable(net, r, src, "A.notebook", ALL_RAY_PORTS + OTHER_PORTS) == NOTEBOOK_NODE_PORTS, src
    # A's Ray pods reach no other user's pods or bystanders (DNS ports aside, see below)
    for src in ("A.head", "A.worker0"):
        for dst in ("B.head", "B.worker0", "B.notebook", "A2.head", "A2.notebook", "random", "intruder", "hub"):
            assert reachable(net, r, src, dst, ALL_RAY_PORTS + OTHER_PORTS) == [], (src, dst)
        # cluster DNS: kube-system on 53, OpenShift's DNS pods on 5353 (the Service's 53 is DNAT'ed)
        for proto in ("UDP", "TCP"):
            assert reachable(net, r, src, "coredns", [53], proto) == [53], (src, proto)
            assert reachable(net, r, src, "dns-default", [5353], proto) == [5353], (src, proto)
            # and only there: not a DNS server a job picks (any pod or namespace, a look-alike
            # label in another namespace, another kube-system pod)
            for dst in ("random", "intruder", "hub", "B.head", "B.notebook", "fake-dns", "kube-other"):
                assert reachable(net, r, src, dst, [53, 5353], proto) == [], (src, dst, proto)

    # no notebook-side policy: nothing else isolates these notebook pods, so there is nothing to open
    names = [p["metadata"]["name"] for p in net.policies]
    assert not any(n.endswith("-notebook") for n in names), names

    # the Ray pods' own DNS/egress rules never open ingress to them
    for src in r:
        if src in ray_pods or src == "A.notebook":
            continue
        if src.startswith("A.") or src in ("coredns", "dns-default"):
            continue
        assert reachable(net, r, src, "A.head", [53, 5353], "UDP") == []


@pytest.mark.asyncio
async def test_extra_ingress_peer_only_opens_what_it_says(kube, world, ray_spawner_factory):
    """ray_network_policy_extra_ingress: Prometheus (a namespace labelled purpose=monitoring) may
    scrape 8080, nothing else."""
    monitoring = world.namespace("monitoring", {"purpose": "monitoring"})
    world.pod("prometheus", monitoring, {"app": "prometheus"})
    extra = [
        {
            "from": [
                {
                    "namespaceSelector": {"matchLabels": {"purpose": "monitoring"}},
                    "podSelector": {"matchLabels": {"app": "prometheus"}},
                }
            ],
            "ports": [{"protocol": "TCP", "port": 8080}],
        }
    ]
    sp = ray_spawner_factory(kube, "alice", ray_network_policy_extra_ingress=extra, ray_orphan_sweep_interval=0)
    sp.user_options = dict(RAY)
    await asyncio.wait_for(sp.start(), 30)
    net = await settled(world, {"A": sp})
    head, prom = cluster_pods(net, sp, naming.COMPONENT_HEAD)[0], net.pod(*world.places["prometheus"])
    assert [p for p in ALL_RAY_PORTS if net.allowed(prom, head, p)] == [8080]


# ----------------------------------------------------------------- Zero-to-JupyterHub
def z2jh_singleuser_policy(values: dict[str, Any], namespace: str, release: str = "jhub") -> dict[str, Any]:
    """The NetworkPolicy z2jh (chart 3.x/4.x, templates/singleuser/netpol.yaml and
    _helpers-netpol.tpl) renders for singleuser pods from these values, with the chart's defaults."""
    np = {
        "enabled": True,
        "ingress": [],
        "egress": [],
        "interNamespaceAccessLabels": "ignore",
        "egressAllowRules": {
            "cloudMetadataServer": False,
            "dnsPortsCloudMetadataServer": True,
            "dnsPortsKubeSystemNamespace": True,
            "dnsPortsPrivateIPs": True,
            "nonPrivateIPs": True,
            "privateIPs": False,
        },
    }
    given = (values.get("singleuser") or {}).get("networkPolicy") or {}
    np.update({k: v for k, v in given.items() if k != "egressAllowRules"})
    np["egressAllowRules"].update(given.get("egressAllowRules") or {})
    if not np["enabled"]:
        return {}
    rules, metadata_ip = np["egressAllowRules"], "169.254.169.254"
    private = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]

    def match(component: str) -> dict[str, Any]:
        return {"matchLabels": {"component": component, "app": "jupyterhub", "release": release}}

    dns_ports = [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]
    egress: list[dict[str, Any]] = [
        {"to": [{"podSelector": match("hub")}], "ports": [{"port": 8081}]},
        {"to": [{"podSelector": match("proxy")}], "ports": [{"port": 8000}]},
        {"to": [{"podSelector": match("autohttps")}], "ports": [{"port": 8080}, {"port": 8443}]},
    ]
    dns_to: list[dict[str, Any]] = []
    if rules["dnsPortsCloudMetadataServer"]:
        dns_to.append({"ipBlock": {"cidr": f"{metadata_ip}/32"}})
    if rules["dnsPortsKubeSystemNamespace"]:
        dns_to.append({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}})
    if rules["dnsPortsPrivateIPs"] and not rules["privateIPs"]:
        dns_to.extend({"ipBlock": {"cidr": c}} for c in private)
    if dns_to:
        egress.append({"ports": dns_ports, "to": dns_to})
    if rules["nonPrivateIPs"]:
        block: dict[str, Any] = {"cidr": "0.0.0.0/0"}
        excepted = ([] if rules["privateIPs"] else private) + (
            [] if rules["cloudMetadataServer"] else [f"{metadata_ip}/32"]
        )
        if excepted:
            block["except"] = excepted
        egress.append({"to": [{"ipBlock": block}]})
    if rules["privateIPs"] and not rules["nonPrivateIPs"]:
        egress.append({"to": [{"ipBlock": {"cidr": c}} for c in private]})
    egress.extend(np["egress"] or [])
    ingress: list[dict[str, Any]] = [
        {
            "ports": [{"port": "notebook-port"}],
            "from": [{"podSelector": {"matchLabels": {"hub.jupyter.org/network-access-singleuser": "true"}}}],
        },
        *(np["ingress"] or []),
    ]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "singleuser", "namespace": namespace},
        "spec": {
            "podSelector": match("singleuser-server"),
            "policyTypes": ["Ingress", "Egress"],
            "ingress": ingress,
            "egress": egress,
        },
    }


def shipped_values() -> dict[str, Any]:
    if not VALUES.exists():
        pytest.skip("jupyterhub_config/z2jh/values.yaml is not there")
    return yaml.safe_load(VALUES.read_text())


def test_z2jh_values_need_no_ray_egress_rule():
    """The notebook-side policy opens what the chart's singleuser policy closes, so the shipped
    values add no rule for Ray (an all-clusters rule would let any notebook reach any Ray pod's
    ports as far as the notebook's own policy is concerned)."""
    rules = (shipped_values()["singleuser"]["networkPolicy"].get("egress")) or []
    ray_rules = [
        r
        for r in rules
        if any(
            (p.get("podSelector") or {}).get("matchLabels", {}).get(naming.LABEL_MANAGED_BY) == naming.MANAGED_BY
            for p in r.get("to") or []
        )
    ]
    assert ray_rules == []


def own_ray_traffic(src: str, dst: str, port: int) -> bool:
    """Traffic the notebook-side policy exists for: a server's notebook and its own Ray pods."""
    (s_key, s_role), (d_key, d_role) = (
        src.split(".", 1) if "." in src else (src, ""),
        dst.split(".", 1) if "." in dst else (dst, ""),
    )
    if s_key != d_key or not s_role or not d_role:
        return False
    if s_role == "notebook" and d_role != "notebook":
        return port in NOTEBOOK_PORTS
    if d_role == "notebook" and s_role != "notebook":
        return port in NOTEBOOK_NODE_PORTS
    return False


@pytest.mark.parametrize("backend", ["pods", "kuberay"])
@pytest.mark.asyncio
async def test_z2jh_singleuser_policy_with_ours(backend, kube, world, ray_spawner_factory):
    z2jh = z2jh_singleuser_policy(shipped_values(), namespace=kube.ns)
    bystanders(world)
    kube.create_object(z2jh)  # there before the spawns: the spawner sees the notebook pods isolated
    spawners = await spawn_all(
        kube, ray_spawner_factory, backend, ray_orphan_sweep_interval=0, common_labels=dict(Z2JH_LABELS)
    )
    both = await settled(world, spawners)
    namespaces = kube.list_objects("namespaces")
    chart_only = Network(both.pods, [p for p in both.policies if p["metadata"]["name"] == "singleuser"], namespaces)
    r = who(both, spawners, world)
    mine = [p for p in both.policies if p["metadata"]["name"] == f"{spawners['A'].ray_session.spec.name}-notebook"]
    assert len(mine) == 1 and mine[0]["spec"]["policyTypes"] == ["Ingress", "Egress"], mine
    assert z2jh["metadata"]["name"] in [p["metadata"]["name"] for p in both.selecting(r["A.notebook"], "Egress")]

    # A's notebook reaches A's head and workers on the notebook ports, and they reach its Ray node
    for ray_pod in ("A.head", "A.worker0", "A.worker1"):
        assert reachable(both, r, "A.notebook", ray_pod, ALL_RAY_PORTS) == NOTEBOOK_PORTS, ray_pod
        assert reachable(both, r, ray_pod, "A.notebook", ALL_RAY_PORTS + OTHER_PORTS) == NOTEBOOK_NODE_PORTS, ray_pod
    # the chart's policy alone would cut both directions (why the notebook-side policy exists)
    assert reachable(chart_only, r, "A.notebook", "A.head", ALL_RAY_PORTS) == []
    assert reachable(chart_only, r, "A.head", "A.notebook", ALL_RAY_PORTS) == []

    # nothing else opened: every connection allowed now is allowed by the chart alone, or is a
    # server's own notebook <-> Ray traffic on the ports listed above
    for (src, s), (dst, d) in itertools.product(r.items(), r.items()):
        if src == dst:
            continue
        for port, proto in [(p, "TCP") for p in ALL_RAY_PORTS + OTHER_PORTS] + [(53, "UDP")]:
            if both.allowed(s, d, port, proto) and not chart_only.allowed(s, d, port, proto):
                assert proto == "TCP" and own_ray_traffic(src, dst, port), (
                    src,
                    dst,
                    port,
                    both.explain(s, d, port, proto),
                )
    for src in ("B.notebook", "A2.notebook"):
        assert reachable(both, r, src, "A.head", ALL_RAY_PORTS) == []
    for src in ("B.head", "B.worker0", "A2.head", "random", "intruder"):
        assert reachable(both, r, src, "A.notebook", ALL_RAY_PORTS) == [], src
    assert reachable(both, r, "A.notebook", "hub", [8081]) == [8081]


@pytest.mark.asyncio
async def test_client_mode_opens_only_the_client_ports(kube, world, ray_spawner_factory):
    """ray_connect_mode = "client": no notebook node, so the cluster never connects back to
    the notebook, and the notebook reaches only GCS, Ray Client and the dashboard."""
    z2jh = z2jh_singleuser_policy(shipped_values(), namespace=kube.ns)
    bystanders(world)
    kube.create_object(z2jh)
    sp = ray_spawner_factory(
        kube, "alice", ray_connect_mode="client", ray_orphan_sweep_interval=0, common_labels=dict(Z2JH_LABELS)
    )
    sp.user_options = dict(RAY)
    await asyncio.wait_for(sp.start(), 30)
    net = await settled(world, {"A": sp})
    r = who(net, {"A": sp}, world)
    mine = [p for p in net.policies if p["metadata"]["name"] == f"{sp.ray_session.spec.name}-notebook"]
    assert len(mine) == 1 and mine[0]["spec"]["policyTypes"] == ["Egress"], mine
    assert reachable(net, r, "A.notebook", "A.head", ALL_RAY_PORTS) == sorted(CLIENT_NOTEBOOK_PORTS)
    assert reachable(net, r, "A.head", "A.notebook", ALL_RAY_PORTS + OTHER_PORTS) == []


@pytest.mark.asyncio
async def test_kuberay_autoscaling_egress_to_the_api_server_is_the_heads_alone(kube, world, ray_spawner_factory):
    """With autoscaling, the head pod (where KubeRay's autoscaler sidecar runs) may reach the API
    server's ports, TCP 443/6443, through a policy of its own: at any address by default (A), only at
    ray_autoscaler_api_server_cidrs when set (B; the "hub" pod's IP stands in for the API server).
    Workers never can; no Ray port opens; other users' Ray pods still refuse A's pods."""
    bystanders(world)
    api_ip = await wait_until(lambda: (kube.get_object("pods", kube.ns, "hub").get("status") or {}).get("podIP"))
    api_ip = api_ip.replace("127.244.", "10.244.", 1)  # as Network.from_cluster sees it
    traits = dict(ray_orphan_sweep_interval=0, ray_worker_min_replicas=2, ray_worker_max_replicas=3)
    spawners = {
        "A": ray_spawner_factory(kube, "alice", ray_backend="kuberay", **traits),
        "B": ray_spawner_factory(
            kube, "bob", ray_backend="kuberay", ray_autoscaler_api_server_cidrs=[f"{api_ip}/32"], **traits
        ),
    }
    for sp in spawners.values():
        sp.user_options = dict(RAY)
    await asyncio.wait_for(asyncio.gather(*(sp.start() for sp in spawners.values())), 60)
    assert spawners["A"].ray_session.spec.autoscaling
    net = await settled(world, spawners)
    head_a = cluster_pods(net, spawners["A"], naming.COMPONENT_HEAD)[0]
    head_b = cluster_pods(net, spawners["B"], naming.COMPONENT_HEAD)[0]
    workers = [w for sp in spawners.values() for w in cluster_pods(net, sp, naming.COMPONENT_WORKER)]
    random, hub = net.pod(kube.ns, "random"), net.pod(kube.ns, "hub")
    assert [p for p in (443, 6443, 6379, 10001) if net.allowed(head_a, random, p)] == [443, 6443]
    assert [p for p in (443, 6443, 6379) if net.allowed(head_b, hub, p)] == [443, 6443]
    assert [p for p in (443, 6443) if net.allowed(head_b, random, p)] == []
    for w in workers:
        assert [p for p in (443, 6443) if net.allowed(w, random, p) or net.allowed(w, hub, p)] == [], w["metadata"][
            "name"
        ]
    assert [p for p in ALL_RAY_PORTS + OTHER_PORTS + [6443] if net.allowed(head_a, head_b, p)] == []
    assert [p for p in ALL_RAY_PORTS if net.allowed(random, head_a, p)] == []
    names = {p["metadata"]["name"] for p in net.policies}
    assert {naming.api_server_network_policy(sp.ray_session.spec.name) for sp in spawners.values()} <= names
