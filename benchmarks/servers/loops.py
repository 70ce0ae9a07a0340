"""The event loops a benchmark server can run on, by name, and the part of
every server's start-up that is not about its protocol: make the loop, open
the server, say READY, serve until killed.

Servers stop by themselves: SIGTERM's default action (no handler is
installed, so no loop needs to support add_signal_handler), the parent's
death (PR_SET_PDEATHSIG), or --timeout seconds.
"""
import argparse
import asyncio
import ctypes
import os
import signal

LOOP_NAMES = ("asyncio", "uvloop", "rloop", "aioring")


def new_event_loop(name):
    # imported here so that a server only needs the one loop it runs on
    if name == "asyncio":
        return asyncio.SelectorEventLoop()
    if name == "uvloop":
        import uvloop
        return uvloop.new_event_loop()
    if name == "rloop":
        import rloop
        return rloop.new_event_loop()
    if name == "aioring":
        # fixed files on or off: AIORING_FIXED_FILES in the environment
        import aioring
        return aioring.new_event_loop()
    raise ValueError(f"unknown loop {name!r}")


def server_arguments(description):
    """The options every benchmark server takes."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--loop", choices=LOOP_NAMES, default="asyncio")
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--tcp", type=int, metavar="PORT", help="listen on 127.0.0.1:PORT")
    where.add_argument("--unix", metavar="PATH", help="listen on a Unix socket")
    ap.add_argument("--timeout", type=float, default=900.0,
                    help="exit after this many seconds whatever happens")
    return ap


def die_with_parent():
    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def serve(loop_name, open_server, timeout):
    """Run `open_server()` (a coroutine returning an asyncio.Server-like
    object) on the named loop, print READY <pid>, and serve."""
    die_with_parent()
    loop = new_event_loop(loop_name)
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(open_server())
        print(f"READY {os.getpid()}", flush=True)
        loop.call_later(timeout, loop.stop)
        loop.run_forever()
    finally:
        loop.close()
