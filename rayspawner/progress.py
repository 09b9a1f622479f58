"""RaySpawner's ``progress()``: KubeSpawner's notebook events merged with the spawn's steps
(``progress_steps``, pure), read from the reflectors' copies of the notebook pod and the
cluster's status, so reporting progress costs no API request."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

from . import aio, progress_steps

_NOTHING = object()  # no event this round (a timeout, or KubeSpawner's events are over)


class _Monotonic:
    """Stamps every event with an integer ``progress`` that never decreases (JupyterHub's
    progress bar and upstream's tests rely on it; KubeSpawner's slow-spawn message has none)."""

    def __init__(self) -> None:
        self.reported = 0

    def __call__(self, event: dict[str, Any], floor: int) -> dict[str, Any]:
        value = event.get("progress")
        own = int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0
        self.reported = min(100, max(self.reported, own, floor))
        return {**event, "progress": self.reported}


class ProgressMixin:
    """A mixin of RaySpawner (before KubeSpawner in its bases)."""

    async def progress(self) -> AsyncIterator[dict[str, Any]]:
        """Steps, in words a user understands: notebook scheduled / started / ready; the Ray head
        starting / accepting connections; workers joined k/N; in driver mode the notebook joining
        its cluster. Unlike KubeSpawner's, this runs until the start is done even when
        ``events_enabled`` is off, so the steps are still shown."""
        queue: asyncio.Queue = asyncio.Queue()
        notebook_events = super().progress()  # type: ignore[misc]

        async def pump() -> None:
            try:
                async for event in notebook_events:
                    await queue.put(event)
            finally:
                await queue.put(None)

        pump_task = asyncio.ensure_future(pump())
        stamp = _Monotonic()
        sent: dict[str, str] = {}  # step key -> the last message sent for it
        pump_done = False
        try:
            while True:
                start = self._start_future  # type: ignore[attr-defined]
                finishing = start is not None and start.done()  # one more pass after the start ends
                event = await self._next_event(queue) if not pump_done else _NOTHING
                if event is None:
                    pump_done = True
                elif event is not _NOTHING:
                    yield stamp(event, 0)
                steps, floor = await self._spawn_steps()
                for key, message in steps:
                    if sent.get(key) != message:
                        sent[key] = message
                        yield stamp({"message": message}, floor)
                if finishing and pump_done:
                    break
                if pump_done:
                    await asyncio.sleep(0.5)
            async for event in self._closing_events(stamp):
                yield event
        finally:
            pump_task.cancel()

    @staticmethod
    async def _next_event(queue: asyncio.Queue) -> Any:
        try:
            return await aio.wait_for(queue.get(), 0.5)
        except asyncio.TimeoutError:
            return _NOTHING

    async def _closing_events(self, stamp: _Monotonic) -> AsyncIterator[dict[str, Any]]:
        session = self.ray_session  # type: ignore[attr-defined]
        if session.failure:
            yield stamp({"message": session.failure}, 0)
            return
        final = await self._cluster_message(final=True) if session.spec else self._notebook_final_message()
        if final:
            yield stamp({"message": final}, 95)

    def _notebook_pod(self) -> dict | None:
        reflector = self.pod_reflector  # type: ignore[attr-defined]
        key = f"{self.namespace}/{self.pod_name}"  # type: ignore[attr-defined]
        pod = reflector.pods.get(key) if reflector is not None else None
        if pod is None or pod["metadata"].get("deletionTimestamp"):
            return None  # an earlier server's pod on its way out says nothing about this spawn
        return pod

    async def _spawn_steps(self) -> tuple[list[tuple[str, str]], int]:
        """The steps reached so far as (key, message), and the progress they are worth."""
        session = self.ray_session  # type: ignore[attr-defined]
        st = await session.status()
        return progress_steps.spawn_steps(self._notebook_pod(), session.spec, st, session.version_warning)

    def _notebook_final_message(self) -> str:
        return progress_steps.notebook_final_message(self._notebook_pod())

    async def _cluster_message(self, final: bool = False) -> str:
        """The cluster's state in one line; ``final``: the spawn's closing message."""
        session = self.ray_session  # type: ignore[attr-defined]
        spec, st = session.spec, await session.status()
        if not spec or not st:
            return ""
        if not (final and st.head_ready):
            return progress_steps.describe_cluster(spec, st, session.version_warning)
        return progress_steps.ready_message(
            spec, st, self._notebook_pod(), session.version_warning, autoscaled=session.autoscaled
        )
