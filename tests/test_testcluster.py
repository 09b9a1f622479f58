"""The test cluster is the real thing: Kubernetes v1.37.2's own API server, authorizers,
admission, controllers and scheduler, with our node agent doing a kubelet's job."""

from __future__ import annotations

import asyncio
import json
import subprocess

import pytest

from testcluster.client import ApiError, Client
from testcluster.kubeconfig import https_request

RESTRICTED = {
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def pod(name: str, **spec_extra: object) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox", "securityContext": RESTRICTED}], **spec_extra},
    }


def kubectl(cluster, *args: str) -> str:
    out = subprocess.run(
        [cluster.kubectl, f"--kubeconfig={cluster.kubeconfig_path}", *args], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_kubectl_reports_the_real_server_version(test_cluster):
    version = json.loads(kubectl(test_cluster, "version", "-o", "json"))
    assert version["serverVersion"]["gitVersion"] == "v1.37.2"
    assert version["clientVersion"]["gitVersion"] == "v1.37.2"


def test_pod_security_restricted_is_enforced_by_admission(kube):
    root_pod = pod("root")
    root_pod["spec"]["containers"][0]["securityContext"] = {}
    with pytest.raises(ApiError) as e:
        kube.create_object(root_pod, kube.ns)
    assert e.value.code == 403
    assert 'violates PodSecurity "restricted:latest"' in str(e.value)
    assert kube.get_object("pods", kube.ns, "root") is None


def test_a_pod_runs_on_the_node_agent_and_graceful_deletion_removes_it(kube):
    kube.create_object(pod("p"), kube.ns)
    ready = kube.wait_for(
        lambda: (
            (p := kube.get_object("pods", kube.ns, "p"))
            and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
            and p
        ),
        what="pod Ready",
    )
    assert ready["spec"]["nodeName"] == "sim-node"  # bound by the real scheduler (namespace's node selector)
    types = {c["type"] for c in ready["status"]["conditions"]}
    assert {"PodScheduled", "Initialized", "ContainersReady", "Ready"} <= types
    assert ready["status"]["phase"] == "Running" and ready["status"]["podIP"]
    events = kube.list_objects("events", kube.ns, field_selector="involvedObject.name=p")
    assert {"Scheduled", "Pulled", "Started"} <= {e["reason"] for e in events}
    kube.delete_object("pods", kube.ns, "p")
    kube.wait_for(lambda: kube.get_object("pods", kube.ns, "p") is None, what="pod gone after graceful delete")


def test_the_node_evicts_a_pod_as_a_kubelet_under_pressure_does(kube):
    """``testcluster.rayspawner.test/evict`` asks the node to do what the kubelet's eviction manager does."""
    from testcluster.node.agent import EVICT

    kube.create_object(pod("e"), kube.ns)
    kube.wait_for(lambda: (kube.get_object("pods", kube.ns, "e") or {}).get("status", {}).get("phase") == "Running")
    message = "The node was low on resource: memory."
    kube.patch_object("pods", kube.ns, "e", {"metadata": {"annotations": {EVICT: message}}})
    evicted = kube.wait_for(
        lambda: (p := kube.get_object("pods", kube.ns, "e")) and p["status"].get("reason") == "Evicted" and p,
        what="pod evicted",
    )
    st = evicted["status"]
    assert st["phase"] == "Failed" and st["message"] == message
    conds = {c["type"]: c for c in st["conditions"]}
    assert (
        conds["DisruptionTarget"]["status"] == "True" and conds["DisruptionTarget"]["reason"] == "TerminationByKubelet"
    )
    assert conds["Ready"]["status"] == "False"
    assert [c["state"]["terminated"]["exitCode"] for c in st["containerStatuses"]] == [137]
    events = kube.list_objects("events", kube.ns, field_selector="involvedObject.name=e")
    assert any(e["reason"] == "Evicted" and e["type"] == "Warning" and e["message"] == message for e in events)
    assert kube.get_object("pods", kube.ns, "e")["metadata"].get("deletionTimestamp") is None  # the object stays


def test_controllers_run_deployments_and_garbage_collection(kube):
    labels = {"app": "w"}
    dep = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "w"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod("x")["spec"]},
        },
    }
    kube.create_object(dep, kube.ns)
    kube.wait_for(lambda: len(kube.list_objects("pods", kube.ns, "app=w")) == 2, what="two replicas")
    kube.wait_for(
        lambda: (kube.get_object("deployments", kube.ns, "w") or {}).get("status", {}).get("readyReplicas") == 2,
        what="Deployment status from the real controller",
    )
    kube.delete_object("deployments", kube.ns, "w")
    kube.wait_for(lambda: kube.list_objects("pods", kube.ns, "app=w") == [], what="garbage collection of the pods")


def test_the_hub_account_is_bound_only_in_its_namespace(kube, kube_factory):
    other = kube_factory()
    token = kube.cluster.client.service_account_token(kube.ns, "hub")
    code, _ = https_request(
        "GET", f"{kube.cluster.server}/api/v1/namespaces/{kube.ns}/pods", kube.cluster.pki.ca.cert, token=token
    )
    assert code == 200
    code, body = https_request(
        "GET", f"{kube.cluster.server}/api/v1/namespaces/{other.ns}/pods", kube.cluster.pki.ca.cert, token=token
    )
    assert code == 403
    assert f'User "system:serviceaccount:{kube.ns}:hub" cannot list resource "pods"' in json.loads(body)["message"]


def test_a_node_reads_only_the_secrets_of_its_own_pods(kube):
    """The Node authorizer: the node agent's identity gets a Secret only once a pod bound to it refers to it."""
    cl = kube.cluster
    node = Client(cl.server, cl.pki.ca.cert, cl.pki.issue("node-sim-node", "system:node:sim-node", ("system:nodes",)))
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"k": "v"}}
    kube.create_object(secret, kube.ns)
    with pytest.raises(ApiError) as e:
        node.get_object("secrets", kube.ns, "s")
    assert e.value.code == 403
    p = pod("uses-s")
    p["spec"]["containers"][0]["env"] = [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]
    kube.create_object(p, kube.ns)
    kube.wait_for(lambda: (kube.get_object("pods", kube.ns, "uses-s") or {}).get("spec", {}).get("nodeName"))
    assert kube.wait_for(lambda: _try_get(node, kube.ns, "s"), what="the node may read the Secret")["data"]["k"]


def _try_get(client: Client, ns: str, name: str):
    try:
        return client.get_object("secrets", ns, name)
    except ApiError:
        return None


def test_fault_proxy_classifies_requests_and_injects_faults(kube):
    kube.faults.add("list", "pods", status=500)
    code, body = _via_proxy(kube, "GET", f"/api/v1/namespaces/{kube.ns}/pods")
    assert code == 500 and body["reason"] == "InternalError"
    code, body = _via_proxy(kube, "GET", f"/api/v1/namespaces/{kube.ns}/pods")
    assert code == 200 and body["kind"] == "PodList"
    assert kube.request_log[-2:] == [("list", "pods", kube.ns, None)] * 2


def test_a_hidden_api_group_looks_as_an_uninstalled_one_does(kube):
    """The proxy's answer for a hidden group is the real API server's for a group it does not serve."""
    real = _via_proxy_raw(kube, "GET", "/apis/nosuch.rayspawner.test/v1")
    assert real[0] == 404, real
    kube.proxy.hidden_groups.add("ray.io")
    try:
        for path in ("/apis/ray.io/v1", f"/apis/ray.io/v1/namespaces/{kube.ns}/rayclusters"):
            assert _via_proxy_raw(kube, "GET", path) == real, path
        code, groups = _via_proxy(kube, "GET", "/apis")
        names = {g["name"] for g in groups["groups"]}
        assert code == 200 and "ray.io" not in names and "apps" in names, names
    finally:
        kube.proxy.hidden_groups.clear()
    assert _via_proxy(kube, "GET", "/apis/ray.io/v1")[0] == 200  # installed on this cluster


@pytest.mark.parametrize(
    "path",
    ["/api/v1/namespaces/kube-system/secrets", "/apis/ray.io/v1/namespaces/kube-system/rayclusters/x", "/api/v1/nodes"],
)
def test_an_injected_403_reads_as_the_api_servers_own(kube, path):
    """What the hub's error messages are built from: the same words, user and API group."""
    code, real = _via_proxy(kube, "GET", path)
    assert code == 403, real
    verb = "get" if path.endswith("/x") else "list"
    resource = path.rstrip("/").split("/")[-2 if verb == "get" else -1]
    kube.faults.add(verb, resource, status=403)
    code, injected = _via_proxy(kube, "GET", path)
    assert code == 403 and injected["message"] == real["message"] + " (injected)", (injected, real)
    assert injected["details"] == real["details"] and injected["reason"] == real["reason"] == "Forbidden"


def _via_proxy_raw(kube, method: str, path: str) -> tuple[int, str, bytes]:
    import http.client
    from urllib.parse import urlsplit

    token = kube.cluster.client.service_account_token(kube.ns, "hub")
    u = urlsplit(kube.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    conn.request(method, path, headers={"Authorization": f"Bearer {token}"})
    resp = conn.getresponse()
    return resp.status, resp.getheader("Content-Type") or "", resp.read()


def _via_proxy(kube, method: str, path: str):
    code, _, body = _via_proxy_raw(kube, method, path)
    return code, json.loads(body)


def test_kubectl_apply_get_logs_delete_through_the_node_agent(kube, tmp_path):
    """What an admin runs while debugging (README's troubleshooting): kubectl against the real API
    server, whose pods/log is proxied to the node agent's kubelet port."""
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(json.dumps(pod("debug")))
    kubectl(kube.cluster, "apply", "-n", kube.ns, "-f", str(manifest))
    kubectl(kube.cluster, "wait", "-n", kube.ns, "--for=condition=Ready", "pod/debug", "--timeout=30s")
    assert "debug" in kubectl(kube.cluster, "get", "pods", "-n", kube.ns)
    assert "simulated log of debug/c" in kubectl(kube.cluster, "logs", "-n", kube.ns, "debug", "-c", "c")
    kubectl(kube.cluster, "delete", "-n", kube.ns, "pod/debug", "--timeout=30s")
    assert kube.get_object("pods", kube.ns, "debug") is None


def _process_pod(name: str, labels: dict[str, str], argv: list[str]) -> dict:
    p = pod(name)
    p["metadata"]["labels"] = labels
    p["spec"]["containers"][0].update(command=argv)
    return p


def _ready(kube, name: str) -> dict:
    return kube.wait_for(
        lambda: (
            (p := kube.get_object("pods", kube.ns, name))
            and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
            and p
        ),
        timeout=60,
        what=f"pod {name} Ready",
    )


@pytest.mark.netns
async def test_process_pods_reach_a_service_and_exec_goes_through_the_api_server(kube_factory):
    """On the process node: a Service's name resolves in a pod to its ready endpoint (from the
    real EndpointSlice controller), and pods/exec through the API server runs in the pod."""
    import sys

    from testcluster.execclient import pod_exec
    from testcluster.kubeconfig import ssl_context

    kube = kube_factory(node="process")
    server = [sys.executable, "-m", "http.server", "8080", "--bind", "0.0.0.0"]
    kube.create_object(_process_pod("web", {"app": "web"}, server), kube.ns)
    kube.create_object(_process_pod("client", {"app": "client"}, ["sleep", "600"]), kube.ns)
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web-svc"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 8080, "targetPort": 8080}]},
    }
    kube.create_object(svc, kube.ns)
    web_ip = _ready(kube, "web")["status"]["podIP"]
    _ready(kube, "client")
    ctx = ssl_context(kube.cluster.pki.ca.cert, kube.cluster.client.cert)
    url = f"http://web-svc.{kube.ns}.svc:8080/"
    fetch = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=10).status)"
    # before its endpoint is ready the name is the ClusterIP, which refuses at once (as kube-proxy's
    # reject rule does) rather than leaving the connection hanging
    deadline = asyncio.get_running_loop().time() + 30
    while True:  # the endpoint becomes ready, then the node rewrites the hosts file
        rc, out = await pod_exec(kube.cluster.server, ctx, kube.ns, "client", [sys.executable, "-c", fetch])
        if rc == 0 or asyncio.get_running_loop().time() > deadline:
            break
        assert any(m in out for m in ("No route to host", "Connection refused", "not known")), out
        await asyncio.sleep(0.5)
    assert (rc, out.strip()) == (0, "200"), out
    rc, out = await pod_exec(kube.cluster.server, ctx, kube.ns, "client", ["getent", "hosts", "web-svc"])
    assert rc == 0 and out.split()[0] == web_ip, out
    rc, out = await pod_exec(kube.cluster.server, ctx, kube.ns, "client", ["sh", "-c", "echo oops >&2; exit 3"])
    assert (rc, out.strip()) == (3, "oops")
    # kubectl exec (SPDY from the API server's stream translator to the kubelet port), with stdin
    run = [kube.cluster.kubectl, f"--kubeconfig={kube.cluster.kubeconfig_path}", "-n", kube.ns, "exec", "-i", "client"]
    script = "read line; echo got $line; echo err >&2; exit 4"
    done = subprocess.run([*run, "--", "sh", "-c", script], input="hello\n", capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr.splitlines()[0]) == (4, "got hello\n", "err"), done
    assert "command terminated with exit code 4" in done.stderr, done.stderr
