"""The example Kubernetes config's notebook pod (with its driver-mode Ray node sidecar and version
probe) meets the "restricted" Pod Security Standard: every container drops all capabilities, forbids
privilege escalation, runs as non-root with the RuntimeDefault seccomp profile."""

from __future__ import annotations

from pathlib import Path

from traitlets.config.loader import PyFileConfigLoader

from .spawner_fixtures import RAY

CONFIG = Path(__file__).resolve().parents[1] / "jupyterhub_config" / "kubernetes.py"


def restricted_problems(pod: dict) -> list[str]:
    """What breaks the restricted profile (pod-level values are inherited where allowed)."""
    spec = pod["spec"]
    pod_sc = spec.get("securityContext") or {}
    problems = []
    if pod_sc.get("runAsUser") == 0:
        problems.append("pod runs as UID 0")
    for c in [*(spec.get("initContainers") or []), *spec["containers"]]:
        sc = c.get("securityContext") or {}
        name = c["name"]
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            problems.append(f"{name}: capabilities not dropped")
        if set((sc.get("capabilities") or {}).get("add") or []) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: capabilities added")
        if not sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")):
            problems.append(f"{name}: runAsNonRoot not set")
        if sc.get("runAsUser") == 0 or sc.get("privileged"):
            problems.append(f"{name}: root or privileged")
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile {seccomp}")
    return problems


async def test_example_notebook_pod_is_restricted(k8s_emu, ray_spawner_factory):
    from kubernetes_asyncio.client import ApiClient

    cfg = PyFileConfigLoader(CONFIG.name, str(CONFIG.parent)).load_config()
    traits = {k: cfg.RaySpawner[k] for k in ("pod_security_context", "container_security_context")}
    sp = ray_spawner_factory(k8s_emu, ray_image="quay.io/rayspawner/ray:2.60.0", **traits)  # + the version probe
    sp.user_options = dict(RAY)
    await sp.load_user_options()
    async with ApiClient() as api:
        pod = api.sanitize_for_serialization(await sp.get_pod_manifest())
    names = [c["name"] for c in pod["spec"].get("initContainers") or []]
    assert len(names) >= 2, names  # the Ray node sidecar and the version probe are checked too
    assert restricted_problems(pod) == []
    bare = ray_spawner_factory(k8s_emu, "bob")  # without the settings the check does fail
    bare.user_options = dict(RAY)
    await bare.load_user_options()
    async with ApiClient() as api:
        assert restricted_problems(api.sanitize_for_serialization(await bare.get_pod_manifest()))
