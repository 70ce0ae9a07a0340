"""aioring: an asyncio event loop for Linux whose I/O runs on io_uring.

    import aioring
    aioring.run(main())

or, with the standard library:

    asyncio.run(main(), loop_factory=aioring.new_event_loop)
"""
import asyncio as __asyncio
import sys as _sys

from aioring._ring.ring import IoUringUnavailable
from aioring.loop import Loop

__version__ = "0.1.0.dev0"
__all__ = ("Loop", "new_event_loop", "run", "IoUringUnavailable", "open")


def new_event_loop() -> Loop:
    """Return a new aioring event loop.

    Raises IoUringUnavailable (an OSError) when io_uring cannot be used in
    this process; its message names the cause and the fix."""
    return Loop()


def run(main, *, loop_factory=new_event_loop, debug=None, **run_kwargs):
    """Run a coroutine on an aioring loop, like asyncio.run() (and with the
    signature of uvloop.run())."""

    if not __asyncio.iscoroutine(main):
        raise ValueError(f"a coroutine was expected, got {main!r}")

    async def wrapper():
        loop = __asyncio.get_running_loop()
        if not isinstance(loop, Loop):
            raise TypeError('aioring.run() uses a non-aioring event loop')
        return await main

    if _sys.version_info >= (3, 12):
        return __asyncio.run(wrapper(), loop_factory=loop_factory, debug=debug,
                             **run_kwargs)
    # 3.11: asyncio.run() has no loop_factory; its Runner does.
    if __asyncio._get_running_loop() is not None:
        raise RuntimeError(
            "asyncio.run() cannot be called from a running event loop")
    with __asyncio.Runner(loop_factory=loop_factory, debug=debug,
                          **run_kwargs) as runner:
        return runner.run(wrapper())


# Event loop policies are deprecated from Python 3.14 on (and go in 3.16):
# loop_factory is the way in, and the policy API is a thin extra where
# CPython still has it.  The policy class is made on first use, so that
# importing aioring never touches asyncio.DefaultEventLoopPolicy (whose
# access warns on 3.14).
_POLICY_NAMES = ("EventLoopPolicy", "install")

if _sys.version_info < (3, 16):
    __all__ += _POLICY_NAMES


def __getattr__(name):
    if name == "open":
        # aioring.files is imported on first use: a program that never opens
        # a file through aioring does not load it
        from aioring.files import open
        globals()["open"] = open
        return open
    base = None
    if name in _POLICY_NAMES:
        base = getattr(__asyncio, "DefaultEventLoopPolicy", None)
    if base is None:
        raise AttributeError(f"module 'aioring' has no attribute {name!r}")

    class EventLoopPolicy(base):
        """An event loop policy whose loops are aioring loops (like
        asyncio.DefaultEventLoopPolicy otherwise: get_event_loop(),
        set_event_loop() and threads behave the same)."""

        def _loop_factory(self):
            return new_event_loop()

    EventLoopPolicy.__module__ = __name__
    EventLoopPolicy.__qualname__ = "EventLoopPolicy"

    def install() -> None:
        """Make aioring the loop of asyncio.new_event_loop() and friends
        (through the policy API; prefer loop_factory)."""
        if _sys.version_info >= (3, 12):
            import warnings
            warnings.warn(
                "aioring.install() is deprecated in favor of aioring.run()",
                DeprecationWarning, stacklevel=2)
        __asyncio.set_event_loop_policy(EventLoopPolicy())

    install.__module__ = __name__
    install.__qualname__ = "install"
    globals().update(EventLoopPolicy=EventLoopPolicy, install=install)
    return globals()[name]
