"""The process kubelet works from a virtualenv under /tmp (a CI clone in /tmp/x).

Pods get a private /tmp; before the fix that hid a venv living under /tmp, so ``python`` in a
pod fell through to another interpreter without Ray. Here the kubelet runs in a subprocess
whose ``sys.executable`` is a fresh venv under /tmp (``--system-site-packages`` plus a .pth to
the project venv's site-packages, so Ray imports), and its pod must run that interpreter.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest

from testcluster.node.netns import NETNS_DIR, host_paths_under_tmp, netns_available

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.netns,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the process kubelet needs root"),
    pytest.mark.skipif(os.geteuid() == 0 and not netns_available(), reason="no network namespaces"),
]

CHECKOUT = Path(__file__).resolve().parents[1]

# Runs under the /tmp venv's python: one pod that reports which interpreter it got.
DRIVER = r"""
import asyncio, json, sys
from testcluster.node.kubelet_process import ProcessKubelet
from tests.test_node_process_runtime import NS, FakeCluster, make_pod

POD = ("import json, os, sys, ray; print('POD ' + json.dumps({'exe': sys.executable, 'prefix': sys.prefix, "
       "'ray': ray.__version__, 'tmp': sorted(os.listdir('/tmp')), 'top': sorted(os.listdir(sys.argv[1]))}))")

async def main() -> None:
    top = sys.argv[1]
    k = ProcessKubelet(time_scale=0.2)
    c = FakeCluster()
    pod = make_pod("k8semu-tmpvenv", [{"name": "main", "image": "x", "command": ["python", "-c", POD, top]}],
                   restartPolicy="Never")
    try:
        await k.start()
        print("NET " + json.dumps({"n": k.network.n, "keep": [str(p) for p in k.keep_paths]}), flush=True)
        await k.run_pod(pod, c.ctx(pod))
        for _ in range(1200):
            if c.status.get("k8semu-tmpvenv", {}).get("phase") in ("Succeeded", "Failed"):
                break
            await asyncio.sleep(0.1)
        print("STATUS " + json.dumps(c.status.get("k8semu-tmpvenv", {}).get("phase")), flush=True)
        print("LOG " + json.dumps(k.logs(NS, "k8semu-tmpvenv", "main")), flush=True)
    finally:
        await k.shutdown()

asyncio.run(main())
"""


def tagged(out: str, tag: str) -> object:
    line = next((x for x in out.splitlines() if x.startswith(tag + " ")), None)
    assert line is not None, f"no {tag} line in:\n{out}"
    return json.loads(line[len(tag) + 1 :])


@pytest.mark.timeout(300)
def test_pod_runs_the_kubelets_venv_under_tmp() -> None:
    top = Path(tempfile.mkdtemp(prefix="k8semu-tmpvenv-", dir="/tmp"))
    try:
        venv = top / "venv"
        subprocess.run(
            [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
            check=True,
            timeout=120,
        )
        vpy = venv / "bin" / "python"
        site = subprocess.run(
            [str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        # The project venv's packages (ray, psutil, ...), without copying them.
        Path(site, "k8semu-project.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
        (top / "not-for-pods").write_text("host /tmp content next to the venv\n")
        p = subprocess.run(
            [str(vpy), "-c", DRIVER, str(top)], cwd=CHECKOUT, capture_output=True, text=True, timeout=240
        )
        out = p.stdout + p.stderr
        assert p.returncode == 0, out
        net = tagged(out, "NET")
        assert tagged(out, "STATUS") == "Succeeded", out
        pod = json.loads(next(x for x in str(tagged(out, "LOG")).splitlines() if x.startswith("POD "))[4:])
        # The pod ran the venv's interpreter (its prefix, not the pyenv/system one) and Ray imported.
        assert pod["prefix"] == str(venv) and pod["exe"].startswith(str(venv)), pod
        assert pod["ray"]
        # the venv, and this checkout too when it lives under /tmp (a CI clone in /tmp/x)
        checkout = [p for p in host_paths_under_tmp() if p == ROOT]
        assert sorted(net["keep"]) == sorted([str(venv), *map(str, checkout)]), net  # type: ignore[index]
        # Its /tmp is still private: only the path to the venv (and checkout), not their neighbours.
        expected_tmp = sorted({top.name, *(p.relative_to("/tmp").parts[0] for p in checkout)})
        assert pod["tmp"] == expected_tmp and pod["top"] == ["venv"], pod
        n = net["n"]  # type: ignore[index]
        assert not [x for x in os.listdir(NETNS_DIR) if x.startswith(f"k8semu-{n}-")]
        assert not [x for x in os.listdir("/sys/class/net") if x == f"k8semu{n}" or x.startswith(f"k8v{n}p")]
    finally:
        shutil.rmtree(top, ignore_errors=True)
