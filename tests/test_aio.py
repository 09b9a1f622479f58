"""rayspawner.aio.wait_for keeps every cancellation (Python 3.11's asyncio.wait_for can drop one)."""

from __future__ import annotations

import asyncio
import sys

import pytest

from rayspawner import aio


async def _cancel_as_the_call_completes(wait_for) -> list[str]:
    """Cancel a task just after the call it waits on completed, at several points of that window;
    what each task did: "done first" (it had finished), "cancelled", or "ran on" (cancel lost)."""
    outcomes = []
    for yields in range(4):
        call = asyncio.get_running_loop().create_future()

        async def inner(call: asyncio.Future = call) -> int:
            return await call

        task = asyncio.ensure_future(wait_for(inner(), 5))
        await asyncio.sleep(0.01)
        call.set_result(1)
        for _ in range(yields):
            await asyncio.sleep(0)
        if task.done():
            outcomes.append("done first")
            continue
        task.cancel()
        try:
            await task
            outcomes.append("ran on")
        except asyncio.CancelledError:
            outcomes.append("cancelled")
    return outcomes


async def test_a_cancel_is_never_lost() -> None:
    outcomes = await _cancel_as_the_call_completes(aio.wait_for)
    assert "ran on" not in outcomes, outcomes
    assert "cancelled" in outcomes, outcomes  # the window was really hit


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="the lost cancel is Python 3.11's")
async def test_stdlib_wait_for_loses_it_here() -> None:
    """Why the helper exists: the same schedule with asyncio.wait_for lets a cancelled task run on."""
    assert "ran on" in await _cancel_as_the_call_completes(asyncio.wait_for)


async def test_timeout_and_none() -> None:
    with pytest.raises(asyncio.TimeoutError):
        await aio.wait_for(asyncio.sleep(1), 0.05)
    assert await aio.wait_for(asyncio.sleep(0, result=7), None) == 7
