"""KubeSpawner's ``profile_list`` for spawners that are not KubeSpawner.

The form, its parsing and the profile logic are KubeSpawner's own functions
(the same template, slugs, defaults, ``profile_options`` and unlisted choices),
so one profile list serves the Kubernetes and the local spawner alike. Only
overrides differ: ``kubespawner_override`` keys that are not traits of the
local spawner (``image``, ``node_selector``, ...) are skipped with a log line,
and overridden traits are reset before each spawn so that one spawn's profile
never leaks into the next.
"""

from __future__ import annotations

import copy
from typing import Any

from jupyterhub.traitlets import Callable
from jupyterhub.utils import maybe_future
from kubespawner import KubeSpawner
from traitlets import Dict, List, TraitError, Unicode, Union, default
from traitlets.config import Configurable

from .errors import InvalidOptions
from .hubpages import HubPagesMixin
from .options import check_user_options


async def initialized_profiles(spawner: Any) -> list[dict]:
    """``spawner.profile_list`` as KubeSpawner would offer it: a callable's result (sync or
    async), sorted, each profile and option initialized. One home for RaySpawner and
    LocalRaySpawner."""
    profile_list = spawner._sorted_dict_values(spawner.profile_list)
    if callable(profile_list):
        profile_list = await maybe_future(profile_list(spawner))
    return spawner._get_initialized_profile_list(profile_list or [])


class ProfileListMixin(HubPagesMixin, Configurable):
    """``profile_list`` → options form, ``options_from_form``, ``load_user_options``."""

    profile_list = Union(
        trait_types=[List(trait=Dict()), Callable(), Dict()],
        config=True,
        help="""Profiles users choose from on the spawn page, exactly as KubeSpawner's
        ``profile_list`` (display_name, slug, default, description, ``kubespawner_override``,
        ``profile_options`` with choices and ``unlisted_choice``). Overrides apply to this
        spawner's traits (``ray_*``, ``cpu_limit``, ...); keys that are not traits here
        (Kubernetes-only settings such as ``image``) are ignored with a log line.""",
    )
    profile_form_template = Unicode(
        "",
        config=True,
        help="A literal Jinja2 template for the profile form; empty: KubeSpawner's form.html.",
    )
    additional_profile_form_template_paths = List(
        config=True,
        help="Directories searched first for a ``form.html`` profile form template.",
    )

    # KubeSpawner's own implementations (plain functions; they use only the traits above,
    # ``user_options``, ``log`` and ``_apply_overrides``). The form itself is rendered by
    # HubPagesMixin (limits shown, the current user_options preselected).
    _sorted_dict_values = KubeSpawner._sorted_dict_values
    _get_initialized_profile_list = KubeSpawner._get_initialized_profile_list
    _render_options_form_dynamically = KubeSpawner._render_options_form_dynamically
    _options_from_form = KubeSpawner._options_from_form
    _validate_user_options = KubeSpawner._validate_user_options
    _get_profile = KubeSpawner._get_profile
    _load_profile = KubeSpawner._load_profile

    _profile_originals: dict[str, Any] | None = None

    @default("options_from_form")
    def _options_from_form_default(self):
        return self._options_from_form

    def _apply_overrides(self, spawner_override: dict) -> None:
        if self._profile_originals is None:
            self._profile_originals = {}
        traits = self.traits()
        for key, value in spawner_override.items():
            if key not in traits:
                self.log.info("Profile override %r is not a setting of %s; ignored", key, type(self).__name__)
                continue
            if callable(value):
                value = value(self)
            self._profile_originals.setdefault(key, copy.deepcopy(getattr(self, key)))
            current = getattr(self, key)
            if isinstance(value, dict) and isinstance(current, dict):
                merged = copy.deepcopy(current)
                merged.update(value)
                value = merged
            setattr(self, key, value)

    def _reset_profile_overrides(self) -> None:
        for key, value in (self._profile_originals or {}).items():
            setattr(self, key, value)
        self._profile_originals = {}

    async def initialized_profile_list(self) -> list[dict]:
        return await initialized_profiles(self)

    async def load_profile_options(self) -> None:
        """Validate ``user_options`` and apply the chosen profile (and its options)."""
        self._reset_profile_overrides()
        profile_list = await self.initialized_profile_list()
        options = self.user_options or {}
        check_user_options(options, profile_list)
        try:
            self._validate_user_options(profile_list)
            if profile_list:
                self._load_profile(options.get("profile"), profile_list)
        except InvalidOptions:
            raise  # already a message for the user (and a ValueError: not to be wrapped twice)
        except (ValueError, KeyError, TraitError, StopIteration) as e:
            raise InvalidOptions(f"Invalid server options: {e}") from None


def options_may_enable_ray(spawner: Any, user_options: dict) -> bool:
    """Whether ``user_options`` choose a profile that can turn Ray on (no I/O, no side effects).

    For a stored server the hub has no Ray state for (its spawn was cut short), so
    nothing is applied: any ``ray_enabled`` override in the chosen profile or one of
    its options counts. A callable ``profile_list`` is not called (it may do I/O and
    would run on every hub start for every server): such servers count only once
    their spawn resolves a Ray cluster.
    """
    if getattr(spawner, "ray_enabled", False):
        return True
    profile_list = spawner.profile_list
    if not profile_list or callable(profile_list):
        return False
    profiles = spawner._get_initialized_profile_list(spawner._sorted_dict_values(profile_list))
    slug = user_options.get("profile") if isinstance(user_options, dict) else None
    profile = next((p for p in profiles if (p.get("slug") == slug if slug else p.get("default"))), None)
    if profile is None:
        return False
    overrides = [profile.get("kubespawner_override") or {}]
    for option in (profile.get("profile_options") or {}).values():
        overrides += [c.get("kubespawner_override") or {} for c in (option.get("choices") or {}).values()]
        overrides.append((option.get("unlisted_choice") or {}).get("kubespawner_override") or {})
    return any(bool(o.get("ray_enabled")) for o in overrides)
