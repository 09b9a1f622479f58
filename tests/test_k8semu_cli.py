"""k8semu entry points: the ``python -m tests.k8semu serve`` CLI and kubelet selection."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.k8semu import K8sEmu

REPO = Path(__file__).resolve().parents[1]


def test_cli_serve_writes_kubeconfig_and_serves(tmp_path: Path) -> None:
    kc = tmp_path / "kc.yaml"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.k8semu", "serve", "--port", "0", "--kubeconfig", str(kc), "--kuberay"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not kc.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert kc.exists(), proc.stderr.read() if proc.poll() is not None else "no kubeconfig"
        conf = yaml.safe_load(kc.read_text())
        server = conf["clusters"][0]["cluster"]["server"]
        assert server.startswith("http://127.0.0.1:")
        req = urllib.request.Request(
            server + "/apis/ray.io/v1", headers={"Authorization": "Bearer " + conf["users"][0]["user"]["token"]}
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            assert json.load(r)["resources"][0]["name"] == "rayclusters"
    finally:
        proc.terminate()
        proc.wait(15)
    assert proc.returncode == 0


def test_process_kubelet_missing_gives_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "testcluster.node.kubelet_process", None)
    with pytest.raises(RuntimeError, match="kubelet_process.py"):
        K8sEmu(kubelet="process").start()


def test_custom_kubelet_instance_and_context_manager() -> None:
    calls: list[str] = []

    class Recorder:
        async def run_pod(self, pod, ctx):  # type: ignore[no-untyped-def]
            calls.append("run:" + pod["metadata"]["name"])
            await ctx.update_status({"phase": "Running", "podIP": "10.244.9.9"})
            await ctx.emit_event("Started", "started by test kubelet")

        async def kill_pod(self, pod, grace_period_seconds):  # type: ignore[no-untyped-def]
            calls.append("kill:" + pod["metadata"]["name"])

        async def shutdown(self) -> None:
            calls.append("shutdown")

    with K8sEmu(kubelet=Recorder()) as emu:
        emu.create_object(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "p"},
                "spec": {"containers": [{"name": "c", "image": "i"}]},
            }
        )
        st = emu.wait_for(
            lambda: (
                (emu.get_object("pods", "default", "p") or {}).get("status", {}).get("podIP")
                and emu.get_object("pods", "default", "p")["status"]
            )
        )
        # the scheduler's PodScheduled condition survives a kubelet status replace
        assert [c["type"] for c in st["conditions"]] == ["PodScheduled"]
        emu.delete_object("pods", "default", "p")
        emu.wait_for(lambda: emu.get_object("pods", "default", "p") is None)
        emu.stop()
        emu.stop()  # idempotent
    assert calls == ["run:p", "kill:p", "shutdown"]
