"""Ray token auth with real Ray, exactly as RaySpawner generates it: checks run against the
cluster of ``tests/test_e2e_kubernetes.py`` (one real cluster serves both).

The clients below run inside the notebook pod's sandbox (``pods/exec`` through the real API
server to the process node) with the notebook env
the spawner generated (RAY_ADDRESS, RAY_DASHBOARD_URL, RAY_AUTH_MODE, RAY_AUTH_TOKEN via
secretKeyRef), so they reach the head through the head Service name, like a user's kernel.

Asserted: a GCS client (port 6379: how nodes join and drivers connect) without the token is
refused, with it served; ``ray.init()`` without the token is refused (client-side
``AuthenticationError`` with ``RAY_AUTH_MODE=token``; refused by the server with auth off on the
client side), with the Secret's token it runs a task; a wrong token fails within a bounded time;
the dashboard/Jobs HTTP API answers 401 without and 403 with a wrong ``Authorization: Bearer``,
200 with the right one; and ``python -m rayspawner.raycheck`` turns the wrong/missing token into a
clear message at once. No client prints the token.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

from testcluster.execclient import pod_exec
from testcluster.kubeconfig import ssl_context

# A Ray Client from the notebook's env; retries only the known flaky first-connect error.
CLIENT = r"""
import json, logging, time
import ray
t0 = time.monotonic()
out = {}
for attempt in range(4):
    try:
        ray.init(logging_level=logging.ERROR)
        out = {"ok": True, "value": ray.get(ray.remote(lambda x: 2 * x).options(num_cpus=0).remote(21), timeout=60)}
        break
    except BaseException as e:
        out = {"ok": False, "error": type(e).__name__, "message": str(e)[:300]}
        # FIELD-NOTES: the proxier's per-client server sometimes fails to start (more under load)
        if "Starting Ray client server failed" not in str(e) or attempt == 3:
            break
        ray.shutdown()
        time.sleep(2)
out["seconds"] = round(time.monotonic() - t0, 1)
print("RESULT " + json.dumps(out), flush=True)
"""

HTTP = r"""
import json, os, sys, urllib.error, urllib.request
base, out = os.environ["RAY_DASHBOARD_URL"], {}
for path in ("/api/version", "/api/jobs/"):
    for name, token in (("none", None), ("wrong", sys.argv[1]), ("right", os.environ["RAY_AUTH_TOKEN"])):
        req = urllib.request.Request(base + path)
        if token:
            req.add_header("Authorization", "Bearer " + token)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                out[f"{path} {name}"] = r.status
        except urllib.error.HTTPError as e:
            out[f"{path} {name}"] = e.code
print("RESULT " + json.dumps(out), flush=True)
"""


# A GCS client (what `ray start --address=...` and drivers use first) straight to port 6379,
# which the notebook may reach: a node joining without the token must be refused there too.
GCS = r"""
import json, os, time
from urllib.parse import urlsplit
host = urlsplit(os.environ["RAY_DASHBOARD_URL"]).hostname
t0 = time.monotonic()
try:
    from ray._raylet import GcsClient
    nodes = GcsClient(address=f"{host}:6379").get_all_node_info(timeout=20)
    out = {"ok": True, "nodes": len(nodes)}
except BaseException as e:
    out = {"ok": False, "error": type(e).__name__, "message": str(e)[:300]}
out["seconds"] = round(time.monotonic() - t0, 1)
print("RESULT " + json.dumps(out), flush=True)
"""


# Ray Client's own retry knobs for the refused cases: 3 attempts of 1-2 s instead of 5 + 10 + 15 s
SHORT_RETRIES = ["RAY_CLIENT_INITIAL_CONNECTION_TIMEOUT_S=1", "RAY_CLIENT_MAX_CONNECTION_TIMEOUT_S=2"]


def result(output: str) -> dict[str, Any]:
    assert "RESULT " in output, output[-3000:]
    return json.loads(output.rsplit("RESULT ", 1)[1].splitlines()[0])


async def in_pod(kube: Any, pod: str, argv: list[str], timeout: float, container: str | None = None) -> tuple[int, str]:
    """Run ``argv`` inside a pod's sandbox (netns, hosts file) with its container's env."""
    ctx = ssl_context(kube.cluster.pki.ca.cert, kube.cluster.client.cert)
    return await pod_exec(kube.cluster.server, ctx, kube.ns, pod, argv, container=container, timeout=timeout)


async def check_token_auth(kube: Any, sp: Any) -> None:
    """Every token case against ``sp``'s running cluster (see the module docstring)."""
    name = sp.ray_session.spec.name
    token = base64.b64decode(kube.get_object("secrets", kube.ns, f"{name}-ray-token")["data"]["auth_token"]).decode()
    head = kube.get_object("pods", kube.ns, f"{name}-head")
    assert {e["name"]: e for e in head["spec"]["containers"][0]["env"]}["RAY_AUTH_TOKEN"]["valueFrom"]
    wrong = token[::-1] if token[::-1] != token else token + "x"
    nb = sp.pod_name

    py = "python"
    cases = {
        "right": in_pod(kube, nb, [py, "-c", CLIENT], 120),
        # the notebook's mode (RAY_AUTH_MODE=token) without a token: the client refuses to try
        "missing": in_pod(kube, nb, ["env", "-u", "RAY_AUTH_TOKEN", py, "-c", CLIENT], 60),
        # a client with auth off (e.g. another user's plain ray.init): the server must refuse it
        "no_auth": in_pod(
            kube, nb, ["env", "-u", "RAY_AUTH_TOKEN", "-u", "RAY_AUTH_MODE", *SHORT_RETRIES, py, "-c", CLIENT], 90
        ),
        "wrong": in_pod(kube, nb, ["env", f"RAY_AUTH_TOKEN={wrong}", *SHORT_RETRIES, py, "-c", CLIENT], 90),
        "http": in_pod(kube, nb, [py, "-c", HTTP, wrong], 60),
        "gcs_right": in_pod(kube, nb, [py, "-c", GCS], 60),
        "gcs_none": in_pod(kube, nb, ["env", "-u", "RAY_AUTH_TOKEN", "-u", "RAY_AUTH_MODE", py, "-c", GCS], 60),
        "check_ok": in_pod(kube, nb, [py, "-m", "rayspawner.raycheck"], 30),
        "check_wrong": in_pod(kube, nb, ["env", f"RAY_AUTH_TOKEN={wrong}", py, "-m", "rayspawner.raycheck"], 30),
        "check_missing": in_pod(kube, nb, ["env", "-u", "RAY_AUTH_TOKEN", py, "-m", "rayspawner.raycheck"], 30),
    }
    t1 = time.monotonic()
    done = dict(zip(cases, await asyncio.gather(*cases.values())))
    clients = time.monotonic() - t1
    print(f"token auth clients took {clients:.1f}s")
    for key, (rc, out) in done.items():
        print(key, rc, out.strip().splitlines()[-1][:300] if out.strip() else "")

    right = result(done["right"][1])
    assert right == {**right, "ok": True, "value": 42}, done["right"][1][-2000:]

    missing = result(done["missing"][1])
    assert not missing["ok"] and missing["error"] == "AuthenticationError", missing
    assert missing["seconds"] < 15, missing

    no_auth = result(done["no_auth"][1])
    assert not no_auth["ok"], no_auth  # the head never serves an unauthenticated client
    assert no_auth["seconds"] < 75, no_auth  # (like a wrong token: "ray client connection timeout" after ~30 s)

    wrong_res = result(done["wrong"][1])
    assert not wrong_res["ok"] and wrong_res["error"] == "ConnectionError", wrong_res
    assert wrong_res["seconds"] < 75, wrong_res  # Ray's own bound (~30 s plus load)

    codes = result(done["http"][1])
    assert codes == {
        # Ray: 401 without a token, 403 with a token that is not the cluster's
        "/api/version none": 401,
        "/api/version wrong": 403,
        "/api/version right": 200,
        "/api/jobs/ none": 401,
        "/api/jobs/ wrong": 403,
        "/api/jobs/ right": 200,
    }, codes

    gcs = result(done["gcs_right"][1])
    assert gcs["ok"] and gcs["nodes"] >= 1, gcs
    gcs_none = result(done["gcs_none"][1])  # "InvalidAuthToken: Authentication token is missing or incorrect"
    assert not gcs_none["ok"] and gcs_none["error"] == "AuthenticationError", gcs_none

    rc, out = done["check_ok"]
    assert rc == 0 and out.startswith("OK: Ray 2."), out
    rc, out = done["check_wrong"]
    assert rc == 1 and "rejected the token" in out and wrong not in out and token not in out, out
    rc, out = done["check_missing"]
    assert rc == 1 and "RAY_AUTH_TOKEN is not set" in out, out
    for key in done:
        assert token not in done[key][1], f"the token was printed by the {key} client"
