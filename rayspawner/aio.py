"""asyncio helpers that every rayspawner coroutine with a time bound uses."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def wait_for(aw: Awaitable[T], timeout: float | None) -> T:
    """``asyncio.wait_for`` that never loses a cancellation.

    Python 3.11's ``wait_for`` returns the result, and drops a cancel, when the cancel arrives
    just as the awaited call completes (CPython gh-86296, fixed in 3.12). A task that loops over
    bounded calls, like the orphan sweeper, then outlives its cancellation, and the hub's
    shutdown (or a test's event loop) waits for it forever. ``asyncio.timeout`` (3.11+) runs the
    call in the same task and has no such window."""
    if timeout is None:
        return await aw
    if sys.version_info >= (3, 12) or not hasattr(asyncio, "timeout"):
        return await asyncio.wait_for(aw, timeout)
    async with asyncio.timeout(timeout):
        return await aw
