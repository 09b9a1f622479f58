"""User options and admin limits: from configuration to a validated RayClusterSpec.

Everything a user can influence (profile, profile options, unlisted choices,
REST API bodies) ends up in the spawner's ``ray_*`` traits; :func:`resolve_spec`
checks the final values against the admin's limits, whatever path set them.
Errors are :class:`~rayspawner.errors.InvalidOptions` with a message the user
can act on, raised before any object exists.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any, Mapping

from .config import RayConfig
from .errors import ConfigError, InvalidOptions
from .naming import cluster_name
from .quantities import format_cpu, format_memory, parse_count, parse_cpu, parse_memory
from .spec import MIN_OBJECT_STORE_BYTES, RayClusterSpec, Resources, WorkerGroup

_IMAGE_RE = re.compile(
    r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9.-]*[a-zA-Z0-9])?(?::[0-9]{1,5})?/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$"
)
_OPTION_VALUE_MAX = 256


def check_user_options(user_options: Mapping[str, Any], profile_list: list[dict]) -> None:
    """Refuse option keys and choices that the chosen profile does not offer.

    KubeSpawner ignores unknown keys and fails with a KeyError on unknown
    choices; users deserve a message naming what they may send instead.
    ``profile_list`` must be initialized (slugs and defaults filled in).
    """
    if not user_options:
        return
    if not isinstance(user_options, Mapping):
        raise InvalidOptions("Server options must be a JSON object.")
    slug = user_options.get("profile")
    if slug is not None and not isinstance(slug, str):
        raise InvalidOptions("'profile' must be a string (a profile slug).")
    if not profile_list:
        extra = sorted(set(user_options) - {"profile"})
        if extra:
            raise InvalidOptions(f"Unknown option(s) {', '.join(map(repr, extra))}: this hub offers no options.")
        return
    slugs = [p["slug"] for p in profile_list]
    if slug:
        if slug not in slugs:
            raise InvalidOptions(f"No such profile {slug[:64]!r}; choose one of: {', '.join(slugs)}.")
        profile = next(p for p in profile_list if p["slug"] == slug)
    else:
        profile = next(p for p in profile_list if p.get("default"))
    options = profile.get("profile_options", {}) or {}
    allowed = {"profile"}
    for name, option in options.items():
        allowed.add(name)
        if option.get("unlisted_choice", {}).get("enabled"):
            allowed.add(f"{name}--unlisted-choice")
    unknown = sorted(k for k in user_options if k not in allowed)
    if unknown:
        offered = ", ".join(sorted(allowed - {"profile"})) or "none"
        raise InvalidOptions(
            f"Unknown option(s) {', '.join(repr(str(k)[:64]) for k in unknown)} for profile "
            f"{profile['slug']!r}; options offered: {offered}."
        )
    for name, option in options.items():
        for key in (name, f"{name}--unlisted-choice"):
            value = user_options.get(key)
            if value is None:
                continue
            if not isinstance(value, str):
                raise InvalidOptions(f"Option {key!r} must be a string, got {type(value).__name__}.")
            if len(value) > _OPTION_VALUE_MAX or any(ord(c) < 32 for c in value):
                raise InvalidOptions(f"Option {key!r}: value is too long or contains control characters.")
        choice = user_options.get(name)
        choices = option.get("choices") or {}
        if choice and choice not in choices:
            raise InvalidOptions(f"Option {name!r}: {choice[:64]!r} is not one of the choices ({', '.join(choices)}).")


def _limit(parse, value: object, trait: str) -> int:
    try:
        return parse(value, trait)
    except InvalidOptions as e:
        raise ConfigError(f"Invalid admin limit: {e}") from None


def check_image(image: str, cfg: RayConfig, notebook_image: str) -> None:
    if not isinstance(image, str) or not _IMAGE_RE.match(image) or len(image) > 255:
        raise InvalidOptions(
            f"Ray image {str(image)[:80]!r} is not a valid image reference (e.g. quay.io/org/ray:2.60.0)."
        )
    if image == notebook_image:
        return
    if cfg.ray_allowed_images and not any(fnmatch.fnmatchcase(image, p) for p in cfg.ray_allowed_images):
        raise InvalidOptions(f"Ray image {image!r} is not allowed here; allowed: {', '.join(cfg.ray_allowed_images)}.")
    if cfg.ray_allowed_images_regex:
        try:
            pattern = re.compile(cfg.ray_allowed_images_regex)
        except re.error as e:
            raise ConfigError(f"ray_allowed_images_regex is not a valid regular expression: {e}") from None
        if not pattern.fullmatch(image):
            raise InvalidOptions(f"Ray image {image!r} is not allowed here (it must match {pattern.pattern!r}).")


def _resources(cfg: RayConfig, prefix: str, gpu: object) -> Resources:
    what = prefix.replace("_", " ")
    return Resources(
        cpu_millis=parse_cpu(getattr(cfg, f"ray_{prefix}_cpu"), f"{what} CPU"),
        memory_bytes=parse_memory(getattr(cfg, f"ray_{prefix}_memory"), f"{what} memory"),
        gpu=parse_count(gpu, f"{what} GPUs"),
    )


def _check_node(res: Resources, what: str, cfg: RayConfig) -> None:
    max_cpu = _limit(parse_cpu, cfg.ray_max_worker_cpu, "ray_max_worker_cpu")
    max_mem = _limit(parse_memory, cfg.ray_max_worker_memory, "ray_max_worker_memory")
    if res.cpu_millis > max_cpu:
        raise InvalidOptions(f"{what} CPU {res.cpu} is over the limit of {format_cpu(max_cpu)} per node.")
    if res.memory_bytes > max_mem:
        raise InvalidOptions(f"{what} memory {res.memory} is over the limit of {format_memory(max_mem)} per node.")
    if res.gpu > cfg.ray_max_worker_gpu:
        raise InvalidOptions(f"{what} GPUs {res.gpu} is over the limit of {cfg.ray_max_worker_gpu} per node.")
    if res.memory_bytes < 512 * 2**20:
        raise InvalidOptions(f"{what} memory {res.memory} is too small; Ray needs at least 512Mi per node.")


def _worker_groups(cfg: RayConfig) -> tuple[WorkerGroup, ...]:
    replicas = parse_count(cfg.ray_worker_replicas, "number of workers")
    lo = (
        replicas
        if cfg.ray_worker_min_replicas in ("", None)
        else parse_count(cfg.ray_worker_min_replicas, "minimum workers")
    )
    hi = (
        replicas
        if cfg.ray_worker_max_replicas in ("", None)
        else parse_count(cfg.ray_worker_max_replicas, "maximum workers")
    )
    if not lo <= replicas <= hi:
        raise InvalidOptions(f"Workers: need minimum ≤ workers ≤ maximum, got {lo} ≤ {replicas} ≤ {hi}.")
    groups = [WorkerGroup("workers", replicas, lo, hi, _resources(cfg, "worker", 0))]
    gpu_replicas = parse_count(cfg.ray_gpu_worker_replicas, "number of GPU workers")
    if gpu_replicas:
        gpus = parse_count(cfg.ray_gpu_worker_gpus, "GPUs per GPU worker", minimum=1)
        base = groups[0].resources
        groups.append(
            WorkerGroup(
                "gpu-workers",
                gpu_replicas,
                gpu_replicas,
                gpu_replicas,
                Resources(base.cpu_millis, base.memory_bytes, gpus),
            )
        )
    return tuple(groups)


def _notebook_object_store(cfg: RayConfig) -> int:
    try:
        size = parse_memory(cfg.ray_notebook_object_store_memory, "ray_notebook_object_store_memory")
    except InvalidOptions as e:  # an admin's setting, not the user's choice
        raise ConfigError(e.message) from None
    if size < MIN_OBJECT_STORE_BYTES:
        raise ConfigError(
            f"ray_notebook_object_store_memory must be at least 80Mi (Ray's minimum), got "
            f"{cfg.ray_notebook_object_store_memory!r}."
        )
    return size


def resolve_spec(
    cfg: RayConfig,
    *,
    username: str,
    servername: str,
    namespace: str,
    notebook_image: str,
    notebook_selector: Mapping[str, str] | None = None,
    image_pull_policy: str | None = None,
) -> RayClusterSpec:
    """Validate the effective ``ray_*`` settings and return the cluster's spec."""
    image = cfg.ray_image or notebook_image
    check_image(image, cfg, notebook_image)
    head = _resources(cfg, "head", cfg.ray_head_gpu)
    _check_node(head, "Head", cfg)
    groups = _worker_groups(cfg)
    for g in groups:
        _check_node(g.resources, "GPU worker" if g.name == "gpu-workers" else "Worker", cfg)
    max_workers = sum(g.max_replicas for g in groups)
    if max_workers > cfg.ray_max_workers:
        raise InvalidOptions(f"{max_workers} workers requested; the limit is {cfg.ray_max_workers} per cluster.")
    if not 0.05 <= cfg.ray_object_store_fraction <= 0.8:
        raise ConfigError("ray_object_store_fraction must be between 0.05 and 0.8.")
    spec = RayClusterSpec(
        name=cluster_name(cfg.ray_cluster_name_template, username, servername),
        namespace=namespace,
        username=username,
        servername=servername,
        image=image,
        notebook_image=notebook_image,
        head=head,
        worker_groups=groups,
        ray_version=cfg.ray_version,
        image_pull_policy=cfg.ray_image_pull_policy or image_pull_policy or None,
        autoscaling=any(g.min_replicas < g.max_replicas for g in groups),
        idle_timeout_seconds=cfg.ray_autoscaler_idle_timeout_seconds,
        upscaling_mode=cfg.ray_autoscaler_upscaling_mode,
        auth_enabled=cfg.ray_auth_enabled,
        secret_owned_at_create=cfg.ray_orphan_sweep_secrets == "by-name",
        network_policy=cfg.ray_network_policy_enabled,
        extra_ingress=tuple(cfg.ray_network_policy_extra_ingress),
        extra_egress=tuple(cfg.ray_network_policy_extra_egress),
        dns_peers=tuple(cfg.ray_network_policy_dns_peers),
        api_server_cidrs=tuple(cfg.ray_autoscaler_api_server_cidrs),
        notebook_selector=dict(notebook_selector or {}),
        cluster_domain=cfg.ray_cluster_domain,
        gpu_resource_name=cfg.ray_gpu_resource_name,
        object_store_fraction=cfg.ray_object_store_fraction,
        node_selector=dict(cfg.ray_node_selector),
        tolerations=tuple(cfg.ray_tolerations),
        extra_env={str(k): str(v) for k, v in cfg.ray_extra_env.items()},
        volumes=tuple(cfg.ray_volumes),
        volume_mounts=tuple(cfg.ray_volume_mounts),
        extra_labels=dict(cfg.ray_extra_labels),
        pod_annotations={str(k): str(v) for k, v in cfg.ray_extra_annotations.items()},
        version_check=cfg.ray_version_check,
        connect_mode=cfg.ray_connect_mode,
        notebook_object_store_bytes=_notebook_object_store(cfg),
    )
    total = spec.total
    limits = (
        ("CPU", total.cpu_millis, _limit(parse_cpu, cfg.ray_max_total_cpu, "ray_max_total_cpu"), format_cpu),
        (
            "memory",
            total.memory_bytes,
            _limit(parse_memory, cfg.ray_max_total_memory, "ray_max_total_memory"),
            format_memory,
        ),
        ("GPUs", total.gpu, cfg.ray_max_total_gpu, str),
    )
    for what, used, limit, fmt in limits:
        if used > limit:
            raise InvalidOptions(
                f"The cluster would use {fmt(used)} {what} in total (head + workers); "
                f"the limit per user is {fmt(limit)}. Choose fewer or smaller workers."
            )
    return spec
