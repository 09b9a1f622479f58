"""``pods/exec`` in the loopback API server: ``kubectl exec`` (websocket, v5.channel.k8s.io)
and ``kubernetes_asyncio``'s ``WsApiClient`` (v4.channel.k8s.io) against the process kubelet,
a clear 400 under the simulated kubelet, and RBAC (``create`` on ``pods/exec``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.k8semu import K8sEmu
from testcluster.node.netns import netns_available

needs_process_kubelet = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="the process kubelet needs root"),
    pytest.mark.skipif(os.geteuid() == 0 and not netns_available(), reason="no network namespaces"),
]
needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not on PATH")

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "p", "namespace": "ex", "labels": {"app": "ex"}},
    "spec": {
        "containers": [
            {
                "name": "c",
                "image": "x",
                "command": ["sleep", "600"],
                "env": [{"name": "GREETING", "value": "hello-from-env"}],
            }
        ]
    },
}


def kubectl(
    emu: K8sEmu, tmp: Path, *args: str, input_: str | None = None, kubeconfig: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig or emu.kubeconfig_path)}
    return subprocess.run(
        ["kubectl", "--cache-dir", str(tmp / "cache"), *args],
        env=env,
        input=input_,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def process_emu(k8s_emu_factory: Callable[..., K8sEmu]) -> K8sEmu:
    emu = k8s_emu_factory(kubelet="process")
    emu.create_object(POD)
    emu.wait_for(lambda: (emu.get_object("pods", "ex", "p") or {}).get("status", {}).get("phase") == "Running", 30)
    return emu


def apply(marks: list[Any]) -> Callable[[Any], Any]:
    def deco(fn: Any) -> Any:
        for m in marks:
            fn = m(fn)
        return fn

    return deco


@apply([*needs_process_kubelet, needs_kubectl])
def test_kubectl_exec_stdout_stderr_exit_code_stdin(process_emu: K8sEmu, tmp_path: Path) -> None:
    p = kubectl(
        process_emu,
        tmp_path,
        "exec",
        "p",
        "-n",
        "ex",
        "--",
        "python",
        "-c",
        "import os, socket, sys; print('out', os.environ['GREETING'], socket.gethostname()); "
        "print('err-line', file=sys.stderr)",
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout == "out hello-from-env p\n"  # the container's env, the pod's hostname
    assert p.stderr == "err-line\n"
    p = kubectl(process_emu, tmp_path, "exec", "p", "-n", "ex", "-c", "c", "--", "sh", "-c", "echo partial; exit 3")
    assert p.returncode == 3 and p.stdout == "partial\n", (p.returncode, p.stdout, p.stderr)
    assert "command terminated with exit code 3" in p.stderr
    p = kubectl(
        process_emu,
        tmp_path,
        "exec",
        "-i",
        "p",
        "-n",
        "ex",
        "--",
        "sh",
        "-c",
        "tr a-z A-Z",
        input_="piped through stdin\n",
    )
    assert (p.returncode, p.stdout) == (0, "PIPED THROUGH STDIN\n"), p.stderr
    p = kubectl(process_emu, tmp_path, "exec", "p", "-n", "ex", "-c", "nope", "--", "true")
    assert p.returncode != 0 and "container nope is not valid for pod p" in p.stderr
    assert ("create", "pods/exec", "ex", "p") in process_emu.request_log


@apply(needs_process_kubelet)
async def test_ws_api_client_exec(process_emu: K8sEmu) -> None:
    from kubernetes_asyncio import client, config
    from kubernetes_asyncio.stream import WsApiClient

    cfg = client.Configuration()
    await config.load_kube_config(config_file=str(process_emu.kubeconfig_path), client_configuration=cfg)
    async with WsApiClient(configuration=cfg) as ws_api:
        v1 = client.CoreV1Api(api_client=ws_api)
        out = await v1.connect_get_namespaced_pod_exec(
            "p",
            "ex",
            command=["python", "-c", "import sys; print(6 * 7); print('to-stderr', file=sys.stderr)"],
            stderr=True,
            stdin=False,
            stdout=True,
            tty=False,
        )
        assert "42\n" in out and "to-stderr\n" in out, out
        # Raw frames: channel bytes, and the final Status on channel 3 with the exit code.
        ws = await v1.connect_get_namespaced_pod_exec(
            "p",
            "ex",
            command=["sh", "-c", "echo x; exit 5"],
            stderr=True,
            stdin=False,
            stdout=True,
            tty=False,
            _preload_content=False,
        )
        frames = []
        async with ws as conn:
            async for msg in conn:
                frames.append((msg.data[0], msg.data[1:]))
    assert (1, b"x\n") in frames
    status = json.loads(next(d for ch, d in frames if ch == 3))
    assert status["status"] == "Failure" and status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "5"}]
    assert WsApiClient.parse_error_data(next(d for ch, d in frames if ch == 3)) == 5


@needs_kubectl
def test_exec_under_the_sim_kubelet_says_why(k8s_emu: K8sEmu, tmp_path: Path) -> None:
    k8s_emu.create_object(POD)
    k8s_emu.wait_for(lambda: (k8s_emu.get_object("pods", "ex", "p") or {}).get("status", {}).get("phase") == "Running")
    p = kubectl(k8s_emu, tmp_path, "exec", "p", "-n", "ex", "--", "true")
    assert p.returncode != 0 and "pods/exec needs the process kubelet" in p.stderr, p.stderr


def exec_status(emu: K8sEmu, token: str) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(
        f"{emu.url}/api/v1/namespaces/ex/pods/p/exec?command=true&stdout=1",
        headers={"Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_exec_rbac_needs_create_on_pods_exec(k8s_emu_factory: Callable[..., K8sEmu]) -> None:
    emu = k8s_emu_factory(tokens={"alice-token": "alice"})
    emu.create_object(POD)
    code, body = exec_status(emu, "alice-token")
    assert code == 403 and 'cannot create resource "pods/exec"' in body["message"], body
    emu.create_object(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "exec", "namespace": "ex"},
            "rules": [{"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]}],
        }
    )
    emu.create_object(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "exec", "namespace": "ex"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "exec"},
            "subjects": [{"kind": "User", "name": "alice"}],
        }
    )
    code, body = exec_status(emu, "alice-token")
    # Authorized now: the sim kubelet answers, and a plain (non-websocket) request would be refused next.
    assert code == 400 and "pods/exec needs the process kubelet" in body["message"], body
