"""``gateway.transport.idle_watch``: deadlines checked in batches, on a real event loop."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.transport.idle_watch import TICK, IdleWatch


class Item:
    """A watched item that records when it was checked."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.checked_at: list[float] = []

    def check_idle(self) -> None:
        self.checked_at.append(self.loop.time())


class CountingLoop:
    """The running loop, counting the timers asked of it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.timers = 0

    def call_at(self, when: float, callback: Any, *args: Any) -> asyncio.TimerHandle:
        self.timers += 1
        return self.loop.call_at(when, callback, *args)


async def test_each_item_is_checked_once_at_or_after_its_deadline():
    loop = asyncio.get_running_loop()
    watch = IdleWatch(loop)
    start = loop.time()
    items = {delay: Item(loop) for delay in (0.01, 0.08, 0.2)}
    for delay, item in items.items():
        watch.watch(item, start + delay)
    await asyncio.sleep(0.2 + 2 * TICK + 0.05)
    for delay, item in items.items():
        (checked,) = item.checked_at
        assert start + delay <= checked <= start + delay + TICK + 0.05


async def test_items_due_in_the_same_tick_share_one_timer():
    loop = asyncio.get_running_loop()
    counting = CountingLoop(loop)
    watch = IdleWatch(counting)  # type: ignore[arg-type]
    # Deadlines spread over the middle of one tick (away from its edges, where
    # float rounding could put a deadline in the tick next to it).
    start = (int(loop.time() / TICK) + 2) * TICK + 0.25 * TICK
    items = [Item(loop) for _ in range(100)]
    for n, item in enumerate(items):
        watch.watch(item, start + n * 0.005 * TICK)
    assert counting.timers == 1
    watch.watch(Item(loop), start + TICK)  # the next tick: a timer of its own
    assert counting.timers == 2
    await asyncio.sleep(3 * TICK + 0.05)
    assert all(len(item.checked_at) == 1 for item in items)


async def test_an_unwatched_item_is_not_checked_and_not_held():
    loop = asyncio.get_running_loop()
    watch = IdleWatch(loop)
    kept, dropped = Item(loop), Item(loop)
    deadline = loop.time() + 0.01
    watch.watch(kept, deadline)
    tick = watch.watch(dropped, deadline)
    watch.unwatch(dropped, tick)
    watch.unwatch(dropped, tick)  # twice is harmless
    await asyncio.sleep(TICK + 0.05)
    assert dropped.checked_at == [] and len(kept.checked_at) == 1
    watch.unwatch(kept, tick)  # after its tick: harmless too


async def test_an_item_may_watch_again_from_its_check():
    loop = asyncio.get_running_loop()
    watch = IdleWatch(loop)

    class Again(Item):
        def check_idle(self) -> None:
            super().check_idle()
            if len(self.checked_at) < 3:
                watch.watch(self, self.loop.time() + 0.01)

    item = Again(loop)
    watch.watch(item, loop.time() + 0.01)
    await asyncio.sleep(3 * (TICK + 0.01) + 0.1)
    assert len(item.checked_at) == 3


async def test_a_failing_check_does_not_stop_the_others():
    loop = asyncio.get_running_loop()
    watch = IdleWatch(loop)

    class Broken(Item):
        def check_idle(self) -> None:
            super().check_idle()
            raise RuntimeError("broken")

    deadline = loop.time() + 0.01
    items = [Broken(loop), *(Item(loop) for _ in range(10)), Broken(loop)]
    for item in items:
        watch.watch(item, deadline)
    await asyncio.sleep(TICK + 0.05)
    assert all(len(item.checked_at) == 1 for item in items)
