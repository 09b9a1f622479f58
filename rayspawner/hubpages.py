"""What rayspawner adds to the hub's own pages, for both spawners.

- the spawn form (:mod:`rayspawner.form`): limits shown, and the spawner's current
  ``user_options`` preselected — rendered again whenever they change, so a refused spawn
  comes back with its profile and choices (KubeSpawner renders a static profile list
  once, with the options of that moment);
- ``ray_summary()`` (:mod:`rayspawner.summary`) for the home page template that ships in
  ``rayspawner/templates`` (``c.JupyterHub.template_paths = [rayspawner.templates_path()]``).
"""

from __future__ import annotations

from typing import Any

from traitlets import default, observe
from traitlets.config import Configurable

from .form import render_profile_form
from .summary import cluster_summary


class HubPagesMixin(Configurable):
    """Needs KubeSpawner's profile traits and helpers (KubeSpawner or ProfileListMixin)."""

    #: the form is ours (rendered from profile_list), not an admin's literal options_form
    _renders_options_form: bool = False

    @default("options_form")
    def _options_form_default(self):
        if not self.profile_list:
            return ""
        if callable(self.profile_list):
            # KubeSpawner's: JupyterHub calls it at each request, it calls _render_options_form
            return self._render_options_form_dynamically
        self._renders_options_form = True
        return self._render_options_form(self._sorted_dict_values(self.profile_list))

    @observe("user_options")
    def _rerender_options_form(self, change: Any) -> None:
        # JupyterHub sets user_options at each spawn request; when the spawn is refused it
        # shows options_form again, which must then preselect what the user just chose
        if self._renders_options_form and self.profile_list and not callable(self.profile_list):
            self.options_form = self._render_options_form(self._sorted_dict_values(self.profile_list))

    def _render_options_form(self, profile_list: list[dict]) -> str:
        return render_profile_form(self, profile_list)

    def ray_summary(self) -> dict[str, Any] | None:
        """This server's Ray cluster (name, size, dashboard path) while it is active; else None."""
        return cluster_summary(self)
