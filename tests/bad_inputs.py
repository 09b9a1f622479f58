"""The catalogue of bad inputs every input path must refuse (shared by tests).

Each entry: (id, user_options sent for the profile "ray" of PROFILES, expected
fragment of the user-facing message). The same list is used against pure
validation, the render CLI and the REST API of a real hub.
"""

from __future__ import annotations

PROFILES = [
    {"display_name": "Plain", "slug": "plain", "default": True},
    {
        "display_name": "Ray",
        "slug": "ray",
        "kubespawner_override": {"ray_enabled": True},
        "profile_options": {
            "workers": {
                "display_name": "Workers",
                "choices": {
                    "1": {"display_name": "1", "kubespawner_override": {"ray_worker_replicas": 1}},
                    "2": {"display_name": "2", "kubespawner_override": {"ray_worker_replicas": 2}},
                },
                "unlisted_choice": {"enabled": True, "kubespawner_override": {"ray_worker_replicas": "{value}"}},
            },
            "size": {
                "display_name": "Worker size",
                "choices": {
                    "small": {
                        "display_name": "1 CPU, 2Gi",
                        "kubespawner_override": {"ray_worker_cpu": "1", "ray_worker_memory": "2Gi"},
                    },
                },
                "unlisted_choice": {"enabled": True, "kubespawner_override": {"ray_worker_memory": "{value}"}},
            },
            "cpu": {
                "display_name": "Worker CPU",
                "choices": {"1": {"display_name": "1", "kubespawner_override": {"ray_worker_cpu": "1"}}},
                "unlisted_choice": {"enabled": True, "kubespawner_override": {"ray_worker_cpu": "{value}"}},
            },
            "gpus": {
                "display_name": "GPU workers",
                "choices": {"0": {"display_name": "none", "kubespawner_override": {"ray_gpu_worker_replicas": 0}}},
                "unlisted_choice": {"enabled": True, "kubespawner_override": {"ray_gpu_worker_replicas": "{value}"}},
            },
            "image": {
                "display_name": "Ray image",
                "choices": {"default": {"display_name": "same as notebook", "kubespawner_override": {"ray_image": ""}}},
                "unlisted_choice": {"enabled": True, "kubespawner_override": {"ray_image": "{value}"}},
            },
        },
    },
    {
        "display_name": "Ray (no unlisted)",
        "slug": "ray-fixed",
        "kubespawner_override": {"ray_enabled": True},
        "profile_options": {
            "workers": {
                "display_name": "Workers",
                "choices": {"1": {"display_name": "1", "kubespawner_override": {"ray_worker_replicas": 1}}},
            }
        },
    },
]

# limits used with PROFILES (admin config)
LIMITS = {
    "ray_max_workers": 4,
    "ray_max_worker_cpu": "4",
    "ray_max_worker_memory": "16Gi",
    "ray_max_worker_gpu": 1,
    "ray_max_total_cpu": "12",
    "ray_max_total_memory": "48Gi",
    "ray_max_total_gpu": 2,
    "ray_allowed_images": ["quay.io/rayspawner/*"],
}

U = "--unlisted-choice"
BAD_INPUTS: list[tuple[str, dict, str]] = [
    ("negative-workers", {"profile": "ray", "workers" + U: "-1"}, "at least 0"),
    ("float-workers", {"profile": "ray", "workers" + U: "1.5"}, "whole number"),
    ("word-workers", {"profile": "ray", "workers" + U: "many"}, "whole number"),
    ("too-many-workers", {"profile": "ray", "workers" + U: "5"}, "limit is 4"),
    ("huge-workers", {"profile": "ray", "workers" + U: "999999"}, "limit is 4"),
    ("shell-workers", {"profile": "ray", "workers" + U: "2; rm -rf /"}, "whole number"),
    ("hex-workers", {"profile": "ray", "workers" + U: "0x10"}, "whole number"),
    ("empty-ish-workers", {"profile": "ray", "workers" + U: " "}, "whole number"),
    ("memory-GB", {"profile": "ray", "size" + U: "2GB"}, "no 'B'"),
    ("memory-lots", {"profile": "ray", "size" + U: "lots"}, "not a memory quantity"),
    ("memory-negative", {"profile": "ray", "size" + U: "-2Gi"}, "not a memory quantity"),
    ("memory-zero", {"profile": "ray", "size" + U: "0"}, "more than zero"),
    ("memory-over-node", {"profile": "ray", "size" + U: "64Gi"}, "over the limit of 16Gi per node"),
    ("memory-tiny", {"profile": "ray", "size" + U: "100Mi"}, "at least 512Mi"),
    ("memory-expr", {"profile": "ray", "size" + U: "2Gi*8"}, "not a memory quantity"),
    ("memory-newline", {"profile": "ray", "size" + U: "2Gi\nkind: Secret"}, "control characters"),
    ("cpu-word", {"profile": "ray", "cpu" + U: "fast"}, "not a CPU quantity"),
    ("cpu-negative", {"profile": "ray", "cpu" + U: "-1"}, "not a CPU quantity"),
    ("cpu-over-node", {"profile": "ray", "cpu" + U: "64"}, "over the limit of 4 per node"),
    ("cpu-zero-millis", {"profile": "ray", "cpu" + U: "0m"}, "more than zero"),
    ("total-cpu", {"profile": "ray", "workers" + U: "4", "cpu" + U: "3"}, "limit per user is 12"),
    ("gpu-negative", {"profile": "ray", "gpus" + U: "-2"}, "at least 0"),
    ("gpu-total", {"profile": "ray", "gpus" + U: "3"}, "limit per user is 2"),
    ("gpu-word", {"profile": "ray", "gpus" + U: "all"}, "whole number"),
    ("image-not-allowed", {"profile": "ray", "image" + U: "docker.io/evil/ray:latest"}, "not allowed"),
    ("image-injection", {"profile": "ray", "image" + U: "quay.io/rayspawner/ray:1 && curl x|sh"}, "not a valid image"),
    ("image-uppercase", {"profile": "ray", "image" + U: "quay.io/RaySpawner/Ray"}, "not a valid image"),
    ("image-template", {"profile": "ray", "image" + U: "{username}"}, "not a valid image"),
    ("unknown-key", {"profile": "ray", "workerz": "2"}, "Unknown option"),
    ("unknown-profile", {"profile": "ray-xxl"}, "No such profile"),
    ("unknown-choice", {"profile": "ray", "workers": "3"}, "not one of the choices"),
    ("unlisted-disabled", {"profile": "ray-fixed", "workers" + U: "1"}, "Unknown option"),
    ("non-string-value", {"profile": "ray", "workers" + U: ["2"]}, "must be a string"),
    ("profile-not-string", {"profile": {"slug": "ray"}}, "must be a string"),
    ("overlong-value", {"profile": "ray", "workers" + U: "9" * 300}, "too long"),
    ("option-for-other-profile", {"profile": "plain", "workers": "1"}, "Unknown option"),
]
