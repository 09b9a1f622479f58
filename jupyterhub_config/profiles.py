"""Profiles shared by the example configs (local.py and kubernetes.py).

KubeSpawner's ``profile_list`` format; the same list works with RaySpawner
(Kubernetes) and LocalRaySpawner (local processes). Slugs are stable:
``plain``, ``ray`` (the default Ray profile), ``ray-large``, ``ray-gpu``.

Sizes are small enough for a 2-core laptop in local mode (Ray's CPUs are
logical there: ``--num-cpus``), and sensible starting points on Kubernetes.

GPU profile: in local mode it stays visible, and a spawn on a machine without
GPUs is refused before anything starts with "This profile asks for 1 GPU(s),
but this machine has 0 ...". (``visible_profiles(gpus=0)`` hides it instead,
for admins who prefer that.)
"""

from __future__ import annotations

import copy

WORKER_SIZES = {
    "small": {
        "display_name": "Small workers: 1 CPU, 1 GiB",
        "default": True,
        "kubespawner_override": {"ray_worker_cpu": "1", "ray_worker_memory": "1Gi"},
    },
    "medium": {
        "display_name": "Medium workers: 2 CPU, 2 GiB",
        "kubespawner_override": {"ray_worker_cpu": "2", "ray_worker_memory": "2Gi"},
    },
}


def _workers(choices: list[int], default: int, unlisted_max_digits: int = 1) -> dict:
    return {
        "display_name": "Ray workers",
        "choices": {
            str(n): {
                "display_name": "head only (no workers)" if n == 0 else f"{n} worker{'s' if n > 1 else ''}",
                "default": n == default,
                "kubespawner_override": {"ray_worker_replicas": n},
            }
            for n in choices
        },
        "unlisted_choice": {
            "enabled": True,
            # rayspawner adds the allowed range (from ray_max_workers) to the label and message
            "display_name": "Number of workers",
            "display_name_in_choices": "Other...",
            "validation_regex": rf"^[0-9]{{1,{unlisted_max_digits}}}$",
            "validation_message": "A whole number of workers.",
            "kubespawner_override": {"ray_worker_replicas": "{value}"},
        },
    }


PROFILE_LIST: list[dict] = [
    {
        "display_name": "Notebook only",
        "slug": "plain",
        "description": "A notebook server without a Ray cluster.",
        "default": True,
    },
    {
        "display_name": "Ray: small CPU cluster",
        "slug": "ray",
        "description": "Your own Ray cluster: a 1 CPU / 1 GiB head plus workers. ray.init() connects to it.",
        "kubespawner_override": {
            "ray_enabled": True,
            "ray_head_cpu": "1",
            "ray_head_memory": "1Gi",
            "ray_worker_cpu": "1",
            "ray_worker_memory": "1Gi",
            "ray_worker_replicas": 1,
        },
        "profile_options": {
            "workers": _workers([0, 1, 2], default=1),
            "worker_size": {"display_name": "Worker size", "choices": WORKER_SIZES},
        },
    },
    {
        "display_name": "Ray: larger CPU cluster",
        "slug": "ray-large",
        "description": "A 2 CPU / 2 GiB head and 2 CPU / 2 GiB workers.",
        "kubespawner_override": {
            "ray_enabled": True,
            "ray_head_cpu": "2",
            "ray_head_memory": "2Gi",
            "ray_worker_cpu": "2",
            "ray_worker_memory": "2Gi",
            "ray_worker_replicas": 2,
        },
        "profile_options": {"workers": _workers([1, 2, 3], default=2)},
    },
    {
        "display_name": "Ray: GPU cluster",
        "slug": "ray-gpu",
        "description": "A CPU head and one GPU worker (1 GPU). Needs GPUs (in local mode: on the hub's machine).",
        "kubespawner_override": {
            "ray_enabled": True,
            "ray_head_cpu": "1",
            "ray_head_memory": "2Gi",
            "ray_worker_replicas": 0,
            "ray_worker_cpu": "2",
            "ray_worker_memory": "4Gi",
            "ray_gpu_worker_replicas": 1,
            "ray_gpu_worker_gpus": 1,
        },
    },
]

#: admin limits shared by both example configs (no profile, option or API call exceeds them)
LIMITS: dict[str, object] = {
    "ray_max_workers": 4,
    "ray_max_worker_cpu": "4",
    "ray_max_worker_memory": "8Gi",
    "ray_max_total_cpu": "12",
    "ray_max_total_memory": "32Gi",
    "ray_max_worker_gpu": 1,
    "ray_max_total_gpu": 2,
}


#: what local mode cannot promise (said on every Ray profile of the local demo)
LOCAL_MODE_NOTE = (
    " Local mode: Ray is told these sizes, but CPU and memory are not isolated; every cluster shares the hub's machine."
)


def visible_profiles(gpus: int | None = None, local: bool = False) -> list[dict]:
    """A copy of :data:`PROFILE_LIST`; with ``gpus=0`` the GPU profile is left out; ``local``
    adds :data:`LOCAL_MODE_NOTE` to the Ray profiles' descriptions."""
    profiles = copy.deepcopy(PROFILE_LIST)
    if gpus == 0:
        profiles = [p for p in profiles if p["slug"] != "ray-gpu"]
    if local:
        for p in profiles:
            if (p.get("kubespawner_override") or {}).get("ray_enabled"):
                p["description"] = p.get("description", "") + LOCAL_MODE_NOTE
    return profiles
