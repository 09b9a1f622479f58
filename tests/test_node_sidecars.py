"""Native sidecar init containers (``restartPolicy: Always`` in ``initContainers``, Kubernetes
>= 1.29) in both node runtimes: the process kubelet runs them for real (ordering, shared
sandbox, readiness, restarts, teardown order); the sim kubelet reports them sensibly.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest

from tests.spawner_fixtures import RESTRICTED_TRAITS

from testcluster.node.kubelet_process import ProcessKubelet
from testcluster.node.netns import netns_available
from tests.test_node_process_runtime import NS, SHARED_MOUNT, FakeCluster, kubelet, make_pod, status_of, wait_for  # noqa: F401


def process_test(fn: Any) -> Any:
    """Marks of a process-kubelet test (root, network namespaces, slow)."""
    for mark in (
        pytest.mark.netns,
        pytest.mark.slow,
        pytest.mark.skipif(os.geteuid() != 0, reason="the process kubelet needs root"),
        pytest.mark.skipif(os.geteuid() == 0 and not netns_available(), reason="no network namespaces"),
    ):
        fn = mark(fn)
    return fn


# Writes /opt/shared/side-file (shared with the main container), serves readiness on 8081 and logs
# when it gets SIGTERM (teardown order).
SIDECAR = r"""
import http.server, os, signal, sys, threading, time
def term(*_):
    print("side-term", time.time(), flush=True)
    os._exit(0)
signal.signal(signal.SIGTERM, term)
srv = http.server.HTTPServer(("0.0.0.0", 8081), http.server.SimpleHTTPRequestHandler)
with open("/opt/shared/side-file", "a") as f:
    f.write("from-sidecar\n")
print("side-up", time.time(), flush=True)
srv.serve_forever()
"""

# Reads what the init containers left in the shared emptyDir; on SIGTERM takes 1 s to exit (the sidecar
# must still be running meanwhile).
MAIN = r"""
import signal, sys, time
def term(*_):
    print("main-term", time.time(), flush=True)
    time.sleep(1)
    print("main-exit", time.time(), flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
seen = [open(f"/opt/shared/{f}").read().strip() for f in ("side-file", "seen-by-init")]
print("main-sees", seen[0], "|", seen[1], flush=True)
while True:
    time.sleep(0.1)
"""


def sidecar_pod(name: str, main: dict[str, Any], **spec: Any) -> dict[str, Any]:
    """The containers share an emptyDir at /opt/shared; /tmp is each container's own."""
    return make_pod(
        name,
        [{**main, "volumeMounts": [SHARED_MOUNT]}],
        volumes=[{"name": "shared", "emptyDir": {}}],
        initContainers=[
            {
                "name": "side",
                "image": "x",
                "restartPolicy": "Always",
                "volumeMounts": [SHARED_MOUNT],
                "command": ["python", "-c", SIDECAR],
                # The next init container starts only once this succeeded (the file exists).
                "startupProbe": {
                    "exec": {"command": ["test", "-f", "/opt/shared/side-file"]},
                    "periodSeconds": 1,
                    "failureThreshold": 100,
                },
                "readinessProbe": {
                    "exec": {
                        "command": [
                            "sh",
                            "-c",
                            "test ! -f /tmp/side-unready && wget -q -T 2 -O /dev/null http://127.0.0.1:8081/",
                        ]
                    },
                    "periodSeconds": 1,
                    "failureThreshold": 1,
                },
            },
            {
                "name": "after",
                "image": "x",
                "command": ["sh", "-c", "cat /opt/shared/side-file > /opt/shared/seen-by-init"],
                "volumeMounts": [SHARED_MOUNT],
            },
        ],
        **spec,
    )


def pod_ready(c: FakeCluster, pod: str) -> bool:
    return {x["type"]: x["status"] for x in status_of(c, pod).get("conditions", [])}.get("Ready") == "True"


def stamp(log_text: str, word: str) -> float:
    return float(next(line.split()[1] for line in log_text.splitlines() if line.startswith(word)))


@process_test
async def test_sidecar_order_readiness_restart_and_teardown(kubelet: ProcessKubelet) -> None:
    c = FakeCluster()
    main = {"name": "main", "image": "x", "command": ["python", "-c", MAIN]}
    # restartPolicy Never: the sidecar restarts anyway.
    pod = sidecar_pod("k8semu-sidecar", main, restartPolicy="Never")
    await kubelet.run_pod(pod, c.ctx(pod))
    name = "k8semu-sidecar"

    def diag() -> str:
        return (
            f"status: {status_of(c, name)}\nside log: {kubelet.logs(NS, name, 'side')}\n"
            f"main log: {kubelet.logs(NS, name, 'main')}"
        )

    await wait_for(lambda: pod_ready(c, name), 60, "pod Ready", diag)
    st = status_of(c, name)
    side, after = st["initContainerStatuses"]
    assert side["name"] == "side" and side["started"] and side["ready"] and "running" in side["state"], side
    assert after["state"]["terminated"]["exitCode"] == 0
    assert st["phase"] == "Running"
    # Order: the sidecar had started (its startupProbe saw the file) before "after" ran, and
    # every container sees the shared emptyDir.
    await wait_for(lambda: "main-sees" in kubelet.logs(NS, name, "main"), 30, "main output", diag)
    assert "main-sees from-sidecar | from-sidecar" in kubelet.logs(NS, name, "main")
    assert "side-up" in kubelet.logs(NS, name, "side")
    # The first status in which "after" has left waiting shows the sidecar started, running.
    first = next(
        {x["name"]: x for x in h["initContainerStatuses"]}
        for h in c.history[name]
        if "waiting" not in h["initContainerStatuses"][1]["state"]
    )
    assert first["side"]["started"] and "running" in first["side"]["state"], first

    # Readiness of the sidecar feeds the pod's Ready condition; exec targets the sidecar.
    rc, out = await kubelet.exec_in_pod(NS, name, ["touch", "/tmp/side-unready"], container="side")
    assert rc == 0, out
    await wait_for(lambda: not status_of(c, name, "side").get("ready"), 30, "sidecar unready", diag)
    assert not pod_ready(c, name) and status_of(c, name, "main")["ready"]
    rc, out = await kubelet.exec_in_pod(NS, name, ["rm", "/tmp/side-unready"], container="side")
    assert rc == 0, out
    await wait_for(lambda: pod_ready(c, name), 30, "Ready again", diag)

    # Killed, the sidecar is restarted (pod restartPolicy Never notwithstanding); main goes on.
    runner = kubelet.runner(NS, name)
    side_c = next(x for x in runner.inits if x.name == "side")
    assert side_c.proc is not None
    os.kill(side_c.proc.pid, signal.SIGKILL)
    await wait_for(
        lambda: status_of(c, name, "side").get("restartCount") == 1 and status_of(c, name, "side").get("ready"),
        60,
        "sidecar restarted and ready",
        diag,
    )
    side = status_of(c, name, "side")
    assert side["lastState"]["terminated"]["exitCode"] == 137 and side["started"]
    assert status_of(c, name, "main")["restartCount"] == 0 and status_of(c, name)["phase"] == "Running"
    assert kubelet.logs(NS, name, "side").count("side-up") == 1  # the restart's log; the first is previous
    assert "side-up" in kubelet.logs(NS, name, "side", previous=True)

    # Teardown: the main container has exited before the sidecar gets SIGTERM.
    await kubelet.kill_pod(pod, 5)
    main_log, side_log = kubelet.logs(NS, name, "main"), kubelet.logs(NS, name, "side")
    assert stamp(main_log, "main-term") < stamp(main_log, "main-exit") <= stamp(side_log, "side-term"), (
        main_log,
        side_log,
    )
    killing = [e[2] for e in c.events if e[0] == name and e[1] == "Killing"]
    assert killing == ["Stopping container main", "Stopping container side"], killing


@process_test
async def test_sidecar_stopped_when_main_completes(kubelet: ProcessKubelet) -> None:
    c = FakeCluster()
    main = {
        "name": "main",
        "image": "x",
        "command": ["sh", "-c", "cat /opt/shared/side-file; echo main-exit $(date +%s.%N)"],
    }
    pod = sidecar_pod("k8semu-sidecar-job", main, restartPolicy="Never")
    name = "k8semu-sidecar-job"
    await kubelet.run_pod(pod, c.ctx(pod))
    await wait_for(
        lambda: status_of(c, name).get("phase") in ("Succeeded", "Failed"),
        60,
        "pod done",
        lambda: f"{status_of(c, name)}\n{kubelet.logs(NS, name, 'side')}",
    )
    st = status_of(c, name)
    assert st["phase"] == "Succeeded", st  # the sidecar's SIGTERM exit does not fail the pod
    side = status_of(c, name, "side")
    assert "terminated" in side["state"] and not side["started"] and not side["ready"]
    main_log, side_log = kubelet.logs(NS, name, "main"), kubelet.logs(NS, name, "side")
    assert "from-sidecar" in main_log
    assert stamp(main_log, "main-exit") <= stamp(side_log, "side-term")


async def test_sim_node_reports_sidecars(kube: Any) -> None:
    """The sim node behind the real API server: what a kubelet reports for a native sidecar."""
    restricted = {**RESTRICTED_TRAITS["container_security_context"], "runAsUser": 1000}

    def container(name: str, **extra: Any) -> dict[str, Any]:
        return {"name": name, "image": "busybox", "securityContext": restricted, **extra}

    kube.create_object(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "sc"},
            "spec": {
                "initContainers": [container("side", restartPolicy="Always"), container("init")],
                "containers": [container("main")],
            },
        },
        kube.ns,
    )

    def ready() -> dict[str, Any] | None:
        st = (kube.get_object("pods", kube.ns, "sc") or {}).get("status") or {}
        conds = {x["type"]: x["status"] for x in st.get("conditions", [])}
        return st if conds.get("Ready") == "True" else None

    st = kube.wait_for(ready, timeout=30, what="pod sc Ready")
    side, init = st["initContainerStatuses"]
    assert (side["name"], side["started"], side["ready"], list(side["state"])) == ("side", True, True, ["running"])
    assert side["containerID"] and side["restartCount"] == 0
    assert init["state"]["terminated"]["reason"] == "Completed" and not init["started"]
    assert st["phase"] == "Running" and st["containerStatuses"][0]["ready"]
