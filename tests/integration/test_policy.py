"""aioring.EventLoopPolicy: asyncio.set_event_loop_policy(aioring.EventLoopPolicy())
makes aioring the loop of asyncio.run(), asyncio.new_event_loop() and
asyncio.get_event_loop(), in the main thread and in others, and otherwise
behaves as asyncio.DefaultEventLoopPolicy.

Each test runs its scenario under the stock policy and under aioring's (in
the same test) and compares what they give, the loop type aside.
"""
import asyncio
import os
import subprocess
import sys
import threading
import warnings

import pytest

import aioring

POLICIES = {"asyncio": (lambda: asyncio.DefaultEventLoopPolicy(), asyncio.SelectorEventLoop),
            "aioring": (lambda: aioring.EventLoopPolicy(), aioring.Loop)}


def under_each_policy(scenario):
    """{policy name: scenario(loop type)} with the policy installed; the old
    policy is put back after each."""
    results = {}
    for name, (make_policy, loop_type) in POLICIES.items():
        old = asyncio.get_event_loop_policy()
        asyncio.set_event_loop_policy(make_policy())
        try:
            results[name] = scenario(loop_type)
        finally:
            asyncio.set_event_loop_policy(old)
    assert results["asyncio"] == results["aioring"], results
    return results["aioring"]


async def echo_and_child():
    """A TCP round trip and a subprocess on the running loop."""
    async def handle(reader, writer):
        writer.write((await reader.readline()).upper())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
    writer.write(b"hello\n")
    line = await reader.readline()
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "print(6 * 7)", stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    return type(asyncio.get_running_loop()), line, out, proc.returncode


def test_asyncio_run_and_new_event_loop():
    def scenario(loop_type):
        loop_seen, line, out, code = asyncio.run(echo_and_child())
        loop = asyncio.new_event_loop()
        try:
            new_type = type(loop)
            result = loop.run_until_complete(echo_and_child())
        finally:
            loop.close()
        with asyncio.Runner() as runner:
            runner_type = type(runner.get_loop())
        return (loop_seen is loop_type, new_type is loop_type,
                runner_type is loop_type, line, out, code, result[1:])

    assert under_each_policy(scenario) == (
        True, True, True, b"HELLO\n", b"42\n", 0, (b"HELLO\n", b"42\n", 0))


def test_get_event_loop_in_the_main_thread():
    assert threading.current_thread() is threading.main_thread()

    def scenario(loop_type):
        policy = asyncio.get_event_loop_policy()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # no loop set yet: the policy makes one in the main thread
            # (with a DeprecationWarning on 3.12 and 3.13)
            loop = policy.get_event_loop()
        try:
            same = policy.get_event_loop() is loop
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                module_level = asyncio.get_event_loop() is loop
            made = type(loop) is loop_type
            value = loop.run_until_complete(asyncio.sleep(0.01, "slept"))
            policy.set_event_loop(None)
            try:
                policy.get_event_loop()
            except RuntimeError as e:
                after_unset = str(e)
            else:
                after_unset = "no error"
        finally:
            policy.set_event_loop(None)
            loop.close()
        return (made, same, module_level, value, after_unset,
                [(w.category.__name__, str(w.message)) for w in caught])

    made, same, module_level, value, after_unset, caught = under_each_policy(scenario)
    assert (made, same, module_level, value) == (True, True, True, "slept")
    assert after_unset.startswith("There is no current event loop in thread")
    if (3, 12) <= sys.version_info < (3, 14):
        assert [c for c, _ in caught] == ["DeprecationWarning"]
    elif sys.version_info < (3, 12):
        assert caught == []


def test_other_threads():
    def scenario(loop_type):
        policy = asyncio.get_event_loop_policy()
        out = {}

        def thread():
            try:
                policy.get_event_loop()
            except RuntimeError as e:
                out["no loop"] = str(e)
            loop = asyncio.new_event_loop()
            try:
                asyncio.set_event_loop(loop)
                out["current"] = asyncio.get_event_loop() is loop
                out["type"] = type(loop) is loop_type
                out["ran"] = loop.run_until_complete(echo_and_child())[1:]
            finally:
                asyncio.set_event_loop(None)
                loop.close()
            loop_seen, *rest = asyncio.run(echo_and_child())
            out["run"] = (loop_seen is loop_type, *rest)

        t = threading.Thread(target=thread, name="worker-thread")
        t.start()
        t.join(60)
        assert not t.is_alive()
        # the thread's loop was its own: the main thread still has none set
        return out, policy._local._loop is None

    out, main_untouched = under_each_policy(scenario)
    assert out == {"no loop": "There is no current event loop in thread 'worker-thread'.",
                   "current": True, "type": True, "ran": (b"HELLO\n", b"42\n", 0),
                   "run": (True, b"HELLO\n", b"42\n", 0)}
    assert main_untouched


def run_python(code):
    return subprocess.run([sys.executable, "-W", "error", "-c", code],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              filter(None, [os.path.dirname(os.path.dirname(aioring.__file__)),
                                            os.environ.get("PYTHONPATH")]))})


SNIPPET = """
import asyncio, sys
{setup}
async def main():
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "print('child')", stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    loop = asyncio.get_running_loop()
    return f"{{type(loop).__module__}}.{{type(loop).__name__}} {{out.decode().strip()}}"
print(asyncio.run(main()))
"""


@pytest.mark.skipif(sys.version_info >= (3, 14), reason="policies are deprecated")
def test_the_readme_snippet_in_a_fresh_interpreter():
    # The usage README.md shows, with warnings turned into errors: no warning
    # on 3.11 to 3.13.
    stock = run_python(SNIPPET.format(setup=""))
    ring = run_python(SNIPPET.format(
        setup="import aioring\nasyncio.set_event_loop_policy(aioring.EventLoopPolicy())"))
    assert (stock.returncode, stock.stderr) == (0, "")
    assert (ring.returncode, ring.stderr) == (0, "")
    assert stock.stdout == "asyncio.unix_events._UnixSelectorEventLoop child\n"
    assert ring.stdout == "aioring.loop.Loop child\n"


def test_import_does_not_touch_the_deprecated_policy_classes():
    # On 3.14 reading asyncio.DefaultEventLoopPolicy warns; aioring reads it
    # only when its EventLoopPolicy is first asked for.  Simulated here: the
    # attribute is taken out of asyncio and served by a recording __getattr__.
    code = """
import asyncio, sys
saved = asyncio.DefaultEventLoopPolicy
del asyncio.DefaultEventLoopPolicy
reads = []
def __getattr__(name):
    if name == "DefaultEventLoopPolicy":
        reads.append(name)
        return saved
    raise AttributeError(name)
asyncio.__getattr__ = __getattr__
import aioring
assert reads == [], reads
assert aioring.run(asyncio.sleep(0, "ok")) == "ok"
assert reads == [], reads
policy = aioring.EventLoopPolicy()
assert reads == ["DefaultEventLoopPolicy"], reads
assert isinstance(policy, saved) and aioring.EventLoopPolicy is type(policy)
assert repr(aioring.EventLoopPolicy) == "<class 'aioring.EventLoopPolicy'>"
loop = policy.new_event_loop()
assert type(loop) is aioring.Loop
loop.close()
print("ok")
"""
    result = run_python(code)
    assert (result.returncode, result.stderr, result.stdout) == (0, "", "ok\n")


def test_unknown_attribute():
    with pytest.raises(AttributeError, match="no attribute 'EventLoopPolicyy'"):
        aioring.EventLoopPolicyy
