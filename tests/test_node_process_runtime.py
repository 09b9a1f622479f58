"""The process node's pod runtime: real processes in per-pod network namespaces.

These drive :class:`testcluster.node.kubelet_process.ProcessKubelet` directly through a small
dict-backed :class:`PodContext` (secrets, a status recorder, a service-name map): a unit
test of the kubelet against its contract, with real processes and netns. Real Ray across pods
(head, workers, the notebook's node, Ray Client, token auth) runs through rayspawner itself in
``tests/test_e2e_kubernetes.py`` (with ``tests/ray_auth_checks.py``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import time
import uuid
from typing import Any, Callable

import psutil
import pytest

from testcluster.node.kubelet_process import ProcessKubelet
from testcluster.node.netns import NETNS_DIR, host_paths_under_tmp, netns_available, netns_pids

log = logging.getLogger(__name__)
#: what a pod's private /tmp shows: only the way to this checkout and venv, where they live under /tmp
KEPT_UNDER_TMP = sorted({p.relative_to("/tmp").parts[0] for p in host_paths_under_tmp()})

pytestmark = [
    pytest.mark.netns,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="process kubelet tests need root (ip netns, mount namespaces)"),
    pytest.mark.skipif(
        os.geteuid() == 0 and not netns_available(),
        reason="this machine cannot create network namespaces (ip netns add / veth failed)",
    ),
]

NS = "k8semu-test"
SHARED_MOUNT = {"name": "shared", "mountPath": "/opt/shared"}


class FakeCluster:
    """Just enough API-server state for a kubelet: secrets, pod statuses, events, services."""

    def __init__(self) -> None:
        self.secrets: dict[str, dict[str, Any]] = {}
        self.status: dict[str, dict[str, Any]] = {}
        self.history: dict[str, list[dict[str, Any]]] = {}
        self.events: list[tuple[str, str, str, str]] = []
        self.services: dict[str, str] = {}  # service name -> backing pod name

    def add_secret(self, name: str, **data: str) -> None:
        self.secrets[name] = {
            "metadata": {"name": name, "namespace": NS},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        }

    def hosts(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for svc, pod in self.services.items():
            ip = self.status.get(pod, {}).get("podIP")
            if ip:
                for name in (f"{svc}.{NS}.svc.cluster.local", f"{svc}.{NS}.svc", f"{svc}.{NS}", svc):
                    out[name] = ip
        return out

    def ctx(self, pod: dict[str, Any]) -> FakeCtx:
        return FakeCtx(self, pod)

    def reasons(self, pod: str) -> list[str]:
        return [e[1] for e in self.events if e[0] == pod]


class FakeCtx:
    def __init__(self, cluster: FakeCluster, pod: dict[str, Any]) -> None:
        self.c, self.namespace = cluster, NS
        self.name, self.uid = pod["metadata"]["name"], pod["metadata"]["uid"]

    async def get_secret(self, name: str) -> dict[str, Any] | None:
        return self.c.secrets.get(name)

    async def get_configmap(self, name: str) -> dict[str, Any] | None:
        return None

    async def update_status(self, status: dict[str, Any]) -> None:
        self.c.status[self.name] = status
        self.c.history.setdefault(self.name, []).append(status)

    async def emit_event(self, reason: str, message: str, type_: str = "Normal") -> None:
        log.info("event %s %s: %s", self.name, reason, message)
        self.c.events.append((self.name, reason, message, type_))

    def service_hosts(self) -> dict[str, str]:
        return self.c.hosts()


def make_pod(name: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "uid": str(uuid.uuid4()), "labels": {"app": "k8semu-test"}},
        "spec": {"containers": containers, "terminationGracePeriodSeconds": 5, **spec},
    }


async def wait_for(
    pred: Callable[[], Any], timeout: float = 30, what: str = "condition", diag: Callable[[], str] | None = None
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f"\n{diag()}" if diag else ""))


def leftovers(kubelet: ProcessKubelet, n: int | None) -> list[str]:
    """Processes, netns and links this kubelet may have left behind."""
    found = []
    root = str(kubelet.root)
    for p in psutil.process_iter(["pid", "cwd", "cmdline"]):
        try:
            if (p.info["cwd"] or "").startswith(root) or p.environ().get("HOME", "").startswith(root):
                found.append(f"process {p.pid} {p.info['cmdline']}")
        except psutil.Error:
            continue
    if n is not None:
        found += [
            f"netns {x}" for x in (os.listdir(NETNS_DIR) if NETNS_DIR.is_dir() else []) if x.startswith(f"k8semu-{n}-")
        ]
        found += [f"link {x}" for x in os.listdir("/sys/class/net") if x == f"k8semu{n}" or x.startswith(f"k8v{n}p")]
    return found


@pytest.fixture
async def kubelet():
    k = ProcessKubelet(time_scale=0.2, backoff_base=0.2, backoff_max=1.0)
    await k.start()
    assert k.mode == "netns"
    n = k.network.n  # type: ignore[union-attr]
    yield k
    await k.shutdown()
    assert leftovers(k, n) == []


def status_of(c: FakeCluster, pod: str, container: str | None = None) -> dict[str, Any]:
    st = c.status.get(pod, {})
    if container is None:
        return st
    return next(
        (x for x in st.get("containerStatuses", []) + st.get("initContainerStatuses", []) if x["name"] == container), {}
    )


PY_DUMP = (
    "import json, os, socket; print(json.dumps({'env': dict(os.environ), 'host': socket.gethostname(), "
    "'svc': socket.gethostbyname('k8semu-svc.k8semu-test.svc.cluster.local'), 'tmp': os.listdir('/tmp')}))"
)


async def test_env_secret_fieldref_hosts_and_sandbox(kubelet: ProcessKubelet) -> None:
    c = FakeCluster()
    c.services["k8semu-svc"] = "k8semu-env"
    pod = make_pod(
        "k8semu-env",
        [
            {
                "name": "main",
                "image": "python:3.11",
                "command": ["python", "-c"],
                "args": [PY_DUMP],
                "resources": {"limits": {"cpu": "1500m", "memory": "1Gi"}},
                "env": [
                    {"name": "PLAIN", "value": "v1"},
                    {"name": "EXPANDED", "value": "$(PLAIN)-x"},
                    {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "k8semu-sec", "key": "token"}}},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                    {"name": "POD_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
                    {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                    {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                    {"name": "CPUS", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
                    {
                        "name": "MEM_MI",
                        "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}},
                    },
                ],
            }
        ],
        restartPolicy="Never",
        nodeName="k8semu-node-1",
    )
    await kubelet.run_pod(pod, c.ctx(pod))
    # The Secret does not exist yet: the container waits with CreateContainerConfigError.
    await wait_for(
        lambda: (
            status_of(c, "k8semu-env", "main").get("state", {}).get("waiting", {}).get("reason")
            == "CreateContainerConfigError"
        ),
        what="CreateContainerConfigError",
    )
    assert 'secret "k8semu-sec" not found' in status_of(c, "k8semu-env", "main")["state"]["waiting"]["message"]
    c.add_secret("k8semu-sec", token="s3cr3t")
    await wait_for(lambda: status_of(c, "k8semu-env").get("phase") in ("Succeeded", "Failed"), what="completion")
    logs = kubelet.logs(NS, "k8semu-env", "main")
    assert status_of(c, "k8semu-env")["phase"] == "Succeeded", logs
    out = json.loads(logs.strip().splitlines()[-1])
    env, st = out["env"], status_of(c, "k8semu-env")
    assert st["podIP"].startswith("10.244.") and st["hostIP"] == kubelet.network.host_ip
    assert {
        k: env[k]
        for k in (
            "PLAIN",
            "EXPANDED",
            "TOKEN",
            "POD_NAME",
            "POD_NS",
            "POD_UID",
            "POD_IP",
            "HOST_IP",
            "NODE",
            "APP",
            "CPUS",
            "MEM_MI",
        )
    } == {
        "PLAIN": "v1",
        "EXPANDED": "v1-x",
        "TOKEN": "s3cr3t",
        "POD_NAME": "k8semu-env",
        "POD_NS": NS,
        "POD_UID": pod["metadata"]["uid"],
        "POD_IP": st["podIP"],
        "HOST_IP": st["hostIP"],
        "NODE": "k8semu-node-1",
        "APP": "k8semu-test",
        "CPUS": "2",
        "MEM_MI": "1024",
    }
    assert env["PATH"].split(":")[0] == os.path.dirname(os.sys.executable)
    assert out["host"] == "k8semu-env"  # own UTS namespace
    assert out["svc"] == st["podIP"]  # service name through the pod's hosts file
    assert out["tmp"] == KEPT_UNDER_TMP  # private /tmp: empty but for the checkout/venv when they live there
    cs = status_of(c, "k8semu-env", "main")
    assert cs["state"]["terminated"]["exitCode"] == 0 and cs["state"]["terminated"]["reason"] == "Completed"
    assert {"Scheduled", "Pulled", "Created", "Started", "Failed"} <= set(c.reasons("k8semu-env"))


async def test_init_containers_termination_message(kubelet: ProcessKubelet) -> None:
    c = FakeCluster()
    pod = make_pod(
        "k8semu-init",
        [
            {
                "name": "main",
                "image": "x",
                "command": ["sh", "-c", "cat /opt/shared/step; ls -A /tmp | grep -qx mine || echo own-tmp; sleep 600"],
                "volumeMounts": [SHARED_MOUNT],
            }
        ],
        initContainers=[
            {
                "name": "first",
                "image": "x",
                "command": [
                    "sh",
                    "-c",
                    "touch /tmp/mine; echo one > /opt/shared/step; printf 'hello from init' > /dev/termination-log",
                ],
                "volumeMounts": [SHARED_MOUNT],
            },
            {
                "name": "second",
                "image": "x",
                "terminationMessagePath": "/tmp/custom-msg",
                "command": [
                    "sh",
                    "-c",
                    "test -f /opt/shared/step && echo two >> /opt/shared/step && echo done > /tmp/custom-msg",
                ],
                "volumeMounts": [SHARED_MOUNT],
            },
        ],
        volumes=[{"name": "shared", "emptyDir": {}}],
    )
    await kubelet.run_pod(pod, c.ctx(pod))
    await wait_for(
        lambda: (
            status_of(c, "k8semu-init").get("phase") == "Running" and status_of(c, "k8semu-init", "main").get("ready")
        ),
        what="Running",
    )
    first, second = status_of(c, "k8semu-init")["initContainerStatuses"]
    assert first["state"]["terminated"]["message"] == "hello from init"
    assert second["state"]["terminated"]["message"] == "done\n"
    assert [s["state"]["terminated"]["exitCode"] for s in (first, second)] == [0, 0]
    # Pending (not initialized) before Running; Initialized/Ready conditions at the end.
    phases = [s["phase"] for s in c.history["k8semu-init"]]
    assert phases[0] == "Pending" and phases[-1] == "Running"
    conds = {x["type"]: x["status"] for x in status_of(c, "k8semu-init")["conditions"]}
    assert conds == {"PodScheduled": "True", "Initialized": "True", "ContainersReady": "True", "Ready": "True"}
    # containers of a pod share their volumes, never their /tmp (each has its own writable layer)
    await wait_for(lambda: "two" in kubelet.logs(NS, "k8semu-init", "main"), what="main sees the init's volume")
    assert "own-tmp" in kubelet.logs(NS, "k8semu-init", "main")


async def test_restart_policies(kubelet: ProcessKubelet) -> None:
    c = FakeCluster()
    failing = {"name": "main", "image": "x", "command": ["sh", "-c", "echo attempt; exit 3"]}
    on_failure = make_pod("k8semu-onfailure", [failing], restartPolicy="OnFailure")
    never = make_pod("k8semu-never", [failing], restartPolicy="Never")
    for p in (on_failure, never):
        await kubelet.run_pod(p, c.ctx(p))
    await wait_for(lambda: status_of(c, "k8semu-onfailure", "main").get("restartCount", 0) >= 2, what="restarts")
    cs = status_of(c, "k8semu-onfailure", "main")
    assert cs["lastState"]["terminated"]["exitCode"] == 3
    assert "BackOff" in c.reasons("k8semu-onfailure")
    assert kubelet.logs(NS, "k8semu-onfailure", "main", previous=True).strip() == "attempt"
    await wait_for(lambda: status_of(c, "k8semu-never").get("phase") == "Failed", what="Failed")
    cs = status_of(c, "k8semu-never", "main")
    assert cs["restartCount"] == 0 and cs["state"]["terminated"]["exitCode"] == 3
    assert cs["state"]["terminated"]["reason"] == "Error"


async def test_probes_readiness_http_liveness_exec(kubelet: ProcessKubelet) -> None:
    c = FakeCluster()
    pod = make_pod(
        "k8semu-probes",
        [
            {
                "name": "web",
                "image": "x",
                "command": ["sh", "-c", "rm -f /tmp/fail; exec python -m http.server 8080"],
                "ports": [{"name": "http", "containerPort": 8080}],
                "startupProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1, "failureThreshold": 60},
                "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
                "livenessProbe": {
                    "exec": {"command": ["sh", "-c", "test ! -f /tmp/fail"]},
                    "periodSeconds": 1,
                    "failureThreshold": 2,
                },
            }
        ],
    )
    await kubelet.run_pod(pod, c.ctx(pod))
    await wait_for(lambda: status_of(c, "k8semu-probes", "web").get("ready"), what="ready via httpGet")
    cs = status_of(c, "k8semu-probes", "web")
    assert cs["started"] and cs["restartCount"] == 0
    assert {x["type"]: x["status"] for x in status_of(c, "k8semu-probes")["conditions"]}["Ready"] == "True"
    # Readiness goes false when the server stops answering 2xx/3xx: not tested; liveness restarts:
    rc, _ = await kubelet.exec_in_pod(NS, "k8semu-probes", ["touch", "/tmp/fail"])
    assert rc == 0
    await wait_for(lambda: status_of(c, "k8semu-probes", "web").get("restartCount") == 1, what="liveness restart")
    assert {"Unhealthy", "Killing"} <= set(c.reasons("k8semu-probes"))
    assert any("Liveness probe failed" in e[2] for e in c.events)
    await wait_for(lambda: status_of(c, "k8semu-probes", "web").get("ready"), what="ready again")
    assert status_of(c, "k8semu-probes", "web")["restartCount"] == 1


async def test_kill_pod_leaves_nothing(kubelet: ProcessKubelet) -> None:
    c = FakeCluster()
    # Children in the process group, a grandchild in its own session, one ignoring SIGTERM.
    script = "sleep 600 & (setsid sleep 601 &) ; sh -c 'trap \"\" TERM; sleep 602' & wait"
    pod = make_pod("k8semu-kill", [{"name": "main", "image": "x", "command": ["sh", "-c", script]}])
    await kubelet.run_pod(pod, c.ctx(pod))
    await wait_for(lambda: status_of(c, "k8semu-kill").get("phase") == "Running", what="Running")
    netns = kubelet.runner(NS, "k8semu-kill").net.netns  # type: ignore[union-attr]
    await wait_for(
        lambda: len([p for p in netns_pids(str(netns)) if psutil.Process(p).name() == "sleep"]) >= 3,
        what="three sleeps in the pod's netns",
    )
    t0 = time.monotonic()
    await kubelet.kill_pod(pod, 2)
    assert time.monotonic() - t0 < 8
    assert not (NETNS_DIR / str(netns)).exists()
    assert [x for x in leftovers(kubelet, kubelet.network.n) if not x.startswith("link k8semu")] == []  # type: ignore[union-attr]
    assert "Killing" in c.reasons("k8semu-kill")


async def test_hosts_file_follows_service_changes(kubelet: ProcessKubelet) -> None:
    c = FakeCluster()
    pod = make_pod("k8semu-hosts", [{"name": "main", "image": "x", "command": ["sleep", "600"]}])
    other = make_pod("k8semu-hosts-other", [{"name": "main", "image": "x", "command": ["sleep", "600"]}])
    for p in (pod, other):
        await kubelet.run_pod(p, c.ctx(p))
    await wait_for(lambda: all(status_of(c, p["metadata"]["name"]).get("phase") == "Running" for p in (pod, other)))
    rc, out = await kubelet.exec_in_pod(NS, "k8semu-hosts", ["getent", "hosts", "k8semu-late-svc"])
    assert rc != 0, out
    c.services["k8semu-late-svc"] = "k8semu-hosts-other"  # a Service appears later
    ip = status_of(c, "k8semu-hosts-other")["podIP"]

    async def resolved() -> str:
        return (
            await kubelet.exec_in_pod(
                NS, "k8semu-hosts", ["getent", "hosts", f"k8semu-late-svc.{NS}.svc.cluster.local"]
            )
        )[1]

    deadline = time.monotonic() + 10
    while ip not in (out := await resolved()):
        assert time.monotonic() < deadline, out
        await asyncio.sleep(0.2)
    # and the pods reach each other over the bridge
    rc, out = await kubelet.exec_in_pod(
        NS, "k8semu-hosts", ["python", "-c", f"import socket; socket.create_connection(('{ip}', 9), 2)"]
    )
    assert "Connection refused" in out  # an answer (RST) from the other netns, not a timeout


async def test_loopback_fallback_mode() -> None:
    k = ProcessKubelet(network="loopback", time_scale=0.2)
    c = FakeCluster()
    c.services["k8semu-svc"] = "k8semu-lo"
    pod = make_pod(
        "k8semu-lo", [{"name": "main", "image": "x", "command": ["python", "-c", PY_DUMP]}], restartPolicy="Never"
    )
    try:
        await k.run_pod(pod, c.ctx(pod))
        assert k.mode == "loopback"
        await wait_for(lambda: status_of(c, "k8semu-lo").get("phase") in ("Succeeded", "Failed"), what="done")
        logs = k.logs(NS, "k8semu-lo", "main")
        assert status_of(c, "k8semu-lo")["phase"] == "Succeeded", logs
        out = json.loads(logs.strip().splitlines()[-1])
        assert status_of(c, "k8semu-lo")["podIP"] == "127.0.0.1" and out["svc"] == "127.0.0.1"
        assert out["host"] == "k8semu-lo" and out["tmp"] == KEPT_UNDER_TMP
    finally:
        await k.shutdown()
    assert leftovers(k, None) == []


async def test_leftovers_of_a_dead_kubelet_are_removed() -> None:
    """A kubelet that died without shutdown() leaves a bridge, netns and processes; the next
    one to take its index (the flock is free, the recorded pid is dead) removes them first."""
    import subprocess

    from testcluster.node.netns import LOCK_DIR, BridgeNetwork

    n = 250
    dead = subprocess.Popen(["true"])
    dead.wait()
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    (LOCK_DIR / f"net-{n}.lock").write_text(str(dead.pid))
    ns = f"k8semu-{n}-7"
    for cmd in (
        f"ip link add k8semu{n} type bridge",
        f"ip netns add {ns}",
        f"ip link add k8v{n}p7 type veth peer name eth0 netns {ns}",
    ):
        subprocess.run(cmd.split(), check=True)
    sleeper = subprocess.Popen(["ip", "netns", "exec", ns, "sleep", "600"], start_new_session=True)
    await asyncio.sleep(0.3)
    net = BridgeNetwork(indexes=[n])
    try:
        await net.setup()
        assert net.n == n and sleeper.wait(5) != 0
        assert not (NETNS_DIR / ns).exists() and f"k8v{n}p7" not in os.listdir("/sys/class/net")
        pod = await net.add_pod()
        assert pod.ip == f"10.244.{n}.2"
    finally:
        await net.teardown()
        if sleeper.poll() is None:
            sleeper.kill()
    assert not [x for x in os.listdir("/sys/class/net") if x == f"k8semu{n}" or x.startswith(f"k8v{n}p")]
    assert not [x for x in os.listdir(NETNS_DIR) if x.startswith(f"k8semu-{n}-")]
