"""Group lookups over a kubespawner reflector's cache without scanning it on every call.

A reflector keeps ``{"namespace/name": object}`` up to date in place (and swaps in a
new dict on each relist). Asking "which objects belong to X" by scanning that dict
costs O(all objects) per call; when every spawning server asks every 0.5-1 s
(``wait_ready``, ``progress``), the hub's CPU grows with N². An index follows the
dict by key-set differences (done in C, at most every ``refresh`` seconds) and
computes an object's group only when its key first appears: the group must not
change while the key exists (a pod's cluster label, an event's involved object).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any


class ReflectorIndex:
    """group -> keys for one reflector dict; ``group_of(obj)`` returns None to leave an object out."""

    def __init__(self, group_of: Callable[[dict[str, Any]], str | None], refresh: float = 0.05):
        self.group_of = group_of
        self.refresh = refresh
        self._dict: Mapping[str, dict] | None = None
        self._known: set[str] = set()
        self._by_group: dict[str, set[str]] = {}
        self._group: dict[str, str] = {}
        #: first-seen order: (sync round, resourceVersion at first sight)
        self._order: dict[str, tuple[int, int]] = {}
        self._round = 0
        self._checked = float("-inf")

    def _sync(self, objects: Mapping[str, dict]) -> None:
        now = time.monotonic()
        if objects is self._dict and now - self._checked < self.refresh:
            return
        self._dict, self._checked = objects, now
        keys = objects.keys()
        if len(keys) == len(self._known) and keys == self._known:
            return
        for key in self._known - keys:
            group = self._group.pop(key, None)
            self._order.pop(key, None)
            if group is not None:
                members = self._by_group.get(group)
                if members is not None:
                    members.discard(key)
                    if not members:
                        del self._by_group[group]
        self._round += 1
        for key in keys - self._known:
            obj = objects.get(key)
            group = self.group_of(obj) if obj is not None else None
            if group is not None:
                rv = str((obj.get("metadata") or {}).get("resourceVersion") or "0")
                self._order[key] = (self._round, int(rv) if rv.isdigit() else 0)
                self._group[key] = group
                self._by_group.setdefault(group, set()).add(key)
        self._known = set(keys)

    def get(self, objects: Mapping[str, dict], group: str) -> list[dict]:
        """The objects of ``group`` in ``objects``, in the order they were first seen
        (new keys show up at most ``refresh`` seconds late)."""
        self._sync(objects)
        keys = sorted(self._by_group.get(group, ()), key=lambda k: self._order.get(k, (0, 0)))
        found = []
        for key in keys:
            obj = objects.get(key)
            if obj is not None:
                found.append(obj)
        return found


def event_pod_name(event: dict[str, Any]) -> str | None:
    involved = event.get("involvedObject") or {}
    name = involved.get("name")
    return f"{involved.get('namespace') or ''}/{name}" if name else None


_EVENTS = ReflectorIndex(event_pod_name)


def pod_events(reflector: Any, namespace: str, pod_name: str, last_event_uid: str | None) -> list[dict]:
    """KubeSpawner.events without sorting every event of the namespace on each call.

    Same result as kubespawner's: this pod's events ordered by lastTimestamp or
    eventTime (stable, so ties keep the reflector's order), only those after the
    ``_last_event`` marker when it is among them.
    """
    if reflector is None:
        return []
    # first-seen order, then a stable sort by time: kubespawner's order, except that ties
    # (same second) keep arrival order even across a relist
    mine = _EVENTS.get(reflector.resources, f"{namespace}/{pod_name}")
    mine.sort(key=lambda e: e["lastTimestamp"] or e["eventTime"])
    events: list[dict] = []
    for event in mine:
        if last_event_uid and event["metadata"]["uid"] == last_event_uid:
            events = []
        else:
            events.append(event)
    return events
