"""The C allocator's thresholds (aioring/allocator.pxi).

Creating an aioring loop lets glibc's heap keep freed memory at its top
(no brk() shrink and regrow on every burst of completed sends) and serve
blocks below 1 MiB from the heap.  Each scenario runs in a fresh
interpreter, since the settings are per process, and is compared with the
stock loop, which leaves glibc alone.  mallinfo2() shows what changed: the
number of blocks with an mmap of their own (hblks) and the heap's size
(arena) after a burst of frees.
"""
import platform

import pytest

from _loop_helpers import python_env, run_python

pytestmark = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="the tuning applies to glibc's malloc only")

PROLOGUE = """
import ctypes, sys
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "aioring":
    import aioring
    loop = aioring.new_event_loop()
else:
    import asyncio
    loop = asyncio.new_event_loop()
"""

# A 900 KiB block: with glibc's defaults (before the program freed any
# block that large) it gets an mmap of its own.
OWN_MMAP = PROLOGUE + """
before = libc.mallinfo2().hblks
block = bytearray(900 * 1024)
print(libc.mallinfo2().hblks - before)
"""

# 4 MiB in 64 KiB blocks, freed at once: with glibc's defaults the heap
# shrinks by about that much (brk), to grow again on the next burst.
HEAP_SHRINK = PROLOGUE + """
blocks = [bytes(64 * 1024) for _ in range(64)]
grown = libc.mallinfo2().arena
del blocks
print(grown - libc.mallinfo2().arena)
"""


def run(code, loop_name, **env):
    proc = run_python(code, loop_name, env=python_env(**env))
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout.split()[-1])


def test_glibc_defaults_on_the_stock_loop():
    # the baseline the other tests depend on
    assert run(OWN_MMAP, "asyncio") == 1
    assert run(HEAP_SHRINK, "asyncio") > 3 * 1024 * 1024


def test_aioring_keeps_the_heap_and_serves_large_blocks_from_it():
    assert run(OWN_MMAP, "aioring") == 0
    assert run(HEAP_SHRINK, "aioring") == 0


@pytest.mark.parametrize("env", [
    {"AIORING_MALLOC_TUNING": "0"},
    {"MALLOC_MMAP_THRESHOLD_": "131072"},
    {"MALLOC_TRIM_THRESHOLD_": "131072"},
    {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"},
], ids=lambda env: next(iter(env)))
def test_left_alone_when_the_user_configured_malloc(env):
    assert run(OWN_MMAP, "aioring", **env) == 1
    assert run(HEAP_SHRINK, "aioring", **env) > 3 * 1024 * 1024
