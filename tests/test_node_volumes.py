"""The process node's volumes and filesystem isolation, behind the real API server.

What a kubelet gives a container, checked from inside the pod (``pods/exec`` through the API
server): Secret, ConfigMap, downward-API and memory-backed emptyDir volumes; the admission
plugin's projected ServiceAccount volume, whose bound token reaches the API server at the
``kubernetes`` Service; a missing Secret's ``FailedMount``; and that a pod sees only its own
files (its ``/tmp``, ``$HOME``, working directory and volumes) while two pods that mount one
claim share it. A sandbox where every pod shares the host's filesystem fails these.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from testcluster.execclient import pod_exec
from testcluster.kubeconfig import ssl_context

from .test_testcluster import RESTRICTED

pytestmark = [pytest.mark.netns, pytest.mark.slow]

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
MI = {"divisor": "1Mi"}

# From inside a pod: who the API server says the mounted token belongs to, reached as an
# in-cluster client reaches it (KUBERNETES_SERVICE_HOST, the mounted CA; no other way in).
WHOAMI = f"""
import json, os, ssl, urllib.request
host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT_HTTPS"]
token = open("{SA_DIR}/token").read()
ctx = ssl.create_default_context(cafile="{SA_DIR}/ca.crt")
req = urllib.request.Request(
    f"https://{{host}}:{{port}}/apis/authentication.k8s.io/v1/selfsubjectreviews",
    data=json.dumps({{"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}}).encode(),
    headers={{"Authorization": "Bearer " + token, "Content-Type": "application/json"}},
)
print(json.dumps(json.load(urllib.request.urlopen(req, context=ctx, timeout=10))["status"]["userInfo"]))
"""


def _pod(name: str, volumes: list[dict[str, Any]], mounts: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "volumes": volumes,
            "containers": [
                {
                    "name": "c",
                    "image": "quay.io/rayspawner/notebook:test",
                    "command": ["sleep", "600"],
                    "securityContext": RESTRICTED,
                    "volumeMounts": mounts,
                    "resources": {"limits": {"memory": "256Mi", "cpu": "1"}},
                    **extra,
                }
            ],
        },
    }


def _ready(kube: Any, name: str, timeout: float = 60) -> dict[str, Any]:
    return kube.wait_for(
        lambda: (
            (p := kube.get_object("pods", kube.ns, name))
            and any(
                c["type"] == "Ready" and c["status"] == "True" for c in (p.get("status") or {}).get("conditions", [])
            )
            and p
        ),
        timeout=timeout,
        what=f"pod {name} Ready",
    )


@pytest.fixture
def process_kube(kube_factory: Any) -> Any:
    return kube_factory(node="process")


@pytest.fixture
def sh(process_kube: Any) -> Any:
    kube = process_kube
    ctx = ssl_context(kube.cluster.pki.ca.cert, kube.cluster.client.cert)

    async def run(pod: str, script: str) -> tuple[int, str]:
        return await pod_exec(kube.cluster.server, ctx, kube.ns, pod, ["sh", "-c", script])

    return run


async def test_volumes_from_the_api_and_the_service_account_token(process_kube: Any, sh: Any) -> None:
    kube = process_kube
    kube.create_object(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "app"},
            "stringData": {"key": "s3cret", "other": "x"},
        },
        kube.ns,
    )
    kube.create_object(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"greeting": "hello"}}, kube.ns
    )
    volumes = [
        {"name": "sec", "secret": {"secretName": "app", "items": [{"key": "key", "path": "tok", "mode": 0o400}]}},
        {"name": "cfg", "configMap": {"name": "cfg"}},
        {
            "name": "info",
            "downwardAPI": {
                "items": [
                    {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
                    {
                        "path": "mem",
                        "resourceFieldRef": {"containerName": "c", "resource": "limits.memory", "divisor": "1Mi"},
                    },
                ]
            },
        },
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
    ]
    mounts = [
        {"name": "sec", "mountPath": "/etc/app-secret"},
        {"name": "cfg", "mountPath": "/etc/app-config"},
        {"name": "info", "mountPath": "/etc/podinfo"},
        {"name": "shm", "mountPath": "/dev/shm"},
    ]
    kube.create_object(_pod("vol", volumes, mounts), kube.ns)
    _ready(kube, "vol")
    rc, out = await sh("vol", "cat /etc/app-secret/tok; echo; ls /etc/app-secret; stat -c %a /etc/app-secret/tok")
    assert (rc, out.split()) == (0, ["s3cret", "tok", "400"]), out  # items: only the key asked for
    rc, out = await sh("vol", "cat /etc/app-config/greeting /etc/podinfo/name; echo; cat /etc/podinfo/mem")
    assert (rc, out.split()) == (0, ["hellovol", "256"]), out
    rc, out = await sh("vol", "touch /etc/app-secret/x 2>&1; echo rc=$?")
    assert "Read-only file system" in out and "rc=1" in out, out
    size = "import os; s = os.statvfs('/dev/shm'); print(s.f_blocks * s.f_frsize)"
    rc, out = await sh("vol", f'{sys.executable} -c "{size}"')
    assert (rc, out.strip()) == (0, str(64 * 2**20)), out  # a tmpfs of sizeLimit, as the kubelet mounts it
    rc, out = await sh("vol", "grep -c . /etc/hosts >/dev/null && cat /etc/resolv.conf")
    assert rc == 0 and "nameserver 127.0.0.1" in out, out  # the pod's files on top of the /etc mirror

    # the ServiceAccount volume the admission plugin added: a token bound to this pod, the CA
    # and the namespace; with them the pod is its ServiceAccount at the `kubernetes` Service
    rc, out = await sh("vol", f"cat {SA_DIR}/namespace; echo; ls {SA_DIR}")
    assert (rc, out.split()) == (0, [kube.ns, "ca.crt", "namespace", "token"]), out
    rc, out = await sh("vol", f"{sys.executable} -c '{WHOAMI}'")
    assert rc == 0, out
    user = json.loads(out.strip().splitlines()[-1])
    assert user["username"] == f"system:serviceaccount:{kube.ns}:default", user
    assert user["extra"]["authentication.kubernetes.io/pod-name"] == ["vol"], user
    pod = kube.get_object("pods", kube.ns, "vol")
    assert user["extra"]["authentication.kubernetes.io/pod-uid"] == [pod["metadata"]["uid"]], user
    # any other ClusterIP stays unreachable (kube-proxy's reject for a Service without endpoints)
    rc, out = await sh(
        "vol", f"{sys.executable} -c \"import socket; socket.create_connection(('10.96.0.2', 443), 3)\" 2>&1"
    )
    assert rc != 0 and "No route to host" in out, out


async def test_a_missing_secret_holds_the_pod_in_container_creating(process_kube: Any, sh: Any) -> None:
    kube = process_kube
    kube.create_object(
        _pod("wait", [{"name": "s", "secret": {"secretName": "later"}}], [{"name": "s", "mountPath": "/etc/later"}]),
        kube.ns,
    )
    message = 'MountVolume.SetUp failed for volume "s" : secret "later" not found'
    kube.wait_for(
        lambda: any(
            e.get("reason") == "FailedMount" and e.get("message") == message and e.get("type") == "Warning"
            for e in kube.list_objects("events", kube.ns)
            if (e.get("involvedObject") or {}).get("name") == "wait"
        ),
        timeout=30,
        what="FailedMount event",
    )
    status = kube.get_object("pods", kube.ns, "wait")["status"]
    assert status["phase"] == "Pending", status
    assert status["containerStatuses"][0]["state"]["waiting"]["reason"] == "ContainerCreating", status
    kube.create_object(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "later"},
            "data": {"k": base64.b64encode(b"v").decode()},
        },
        kube.ns,
    )
    _ready(kube, "wait")
    rc, out = await sh("wait", "cat /etc/later/k")
    assert (rc, out) == (0, "v"), out


async def test_a_pod_sees_only_its_own_files_and_the_claims_it_mounts(process_kube: Any, sh: Any) -> None:
    kube = process_kube
    shared = kube.shared_claim("shared")
    claim = [{"name": "shared", "persistentVolumeClaim": {"claimName": "shared"}}]
    mount = [{"name": "shared", "mountPath": "/mnt/shared"}]
    kube.create_object(_pod("a", claim, mount), kube.ns)
    kube.create_object(_pod("b", claim, mount, workingDir="/srv/work"), kube.ns)
    kube.create_object(_pod("c", [], []), kube.ns)
    for name in ("a", "b", "c"):
        _ready(kube, name)
    rc, out = await sh("a", 'echo "$HOME $(pwd)"; echo a > ~/a-home; echo a > /tmp/a-tmp; echo a > /mnt/shared/from-a')
    assert (rc, out.split()) == (0, ["/opt/app-root/src", "/opt/app-root/src"]), out
    assert (shared / "from-a").read_text() == "a\n"  # the claim is the volume's directory on the node
    rc, out = await sh("b", "pwd; cat /mnt/shared/from-a; ls -A ~ /tmp | tr '\\n' ' '")
    assert rc == 0 and out.splitlines()[:2] == ["/srv/work", "a"], out  # the claim is shared ...
    assert "a-home" not in out and "a-tmp" not in out, out  # ... a's HOME and /tmp are not
    # the node's own directories (every pod's dir, the PV paths, the cluster's keys) are hidden
    root = kube.cluster.root
    rc, out = await sh(
        "c", f"ls -A {root}; test -e {root / 'kubeconfig'} && echo LEAK; test -e {shared} && echo LEAK; ls /mnt"
    )
    assert rc == 0 and "LEAK" not in out and "shared" not in out, out
    # nothing was created on the host for the pods' mount points and working directories
    assert not Path("/opt/app-root").exists() and not Path("/srv/work").exists() and not Path("/mnt/shared").exists()
