"""aioring's pytest plugin (aioring/pytest_plugin.py) on a user's test suite.

A small suite (pytest-asyncio tests with an async server fixture, a socket
round trip, a subprocess and timeouts; anyio tests with a task group, a TCP
listener, a cancel scope and a subprocess; a synchronous test) is run with
pytest in a subprocess, without the opt-in, with --aioring, with
--aioring-loop=both and with the ini option.  Every async test records the
type of its running loop; the records and pytest's outcomes must show the
stock loop without the opt-in, aioring with it, and both in "both" mode,
with every test passing each time.
"""
import importlib.metadata
import json
import os
import sys

import pytest

import aioring

pytest_plugins = ["pytester"]

STOCK = "asyncio.unix_events._UnixSelectorEventLoop"
AIORING = "aioring.loop.Loop"

CONFTEST = '''
import asyncio, json, os
import pytest

def _record(nodeid, **data):
    with open(os.environ["AIORING_PLUGIN_RECORD"], "a") as f:
        f.write(json.dumps(dict(test=nodeid, **data)) + "\\n")

@pytest.fixture
def record(request):
    def record(**data):
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        _record(request.node.nodeid,
                loop=None if loop is None else
                f"{type(loop).__module__}.{type(loop).__qualname__}", **data)
    return record
'''

TEST_ASYNCIO = '''
import asyncio, sys
import pytest, pytest_asyncio

@pytest_asyncio.fixture
async def echo_server():
    loop_seen = type(asyncio.get_running_loop())
    async def handle(reader, writer):
        while data := await reader.read(65536):
            writer.write(data[::-1])
            await writer.drain()
        writer.close()
        await writer.wait_closed()
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[:2], loop_seen
    server.close()
    await server.wait_closed()

@pytest.mark.asyncio
async def test_round_trip(echo_server, record):
    (host, port), fixture_loop = echo_server
    # the fixture ran on the loop the test runs on
    assert fixture_loop is type(asyncio.get_running_loop())
    reader, writer = await asyncio.open_connection(host, port)
    payload = bytes(range(256)) * 400
    writer.write(payload)
    writer.write_eof()
    got = await reader.read()
    writer.close()
    await writer.wait_closed()
    assert len(got) == len(payload)
    record(received=len(got))

@pytest.mark.asyncio
async def test_subprocess(record):
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import sys; print(sys.stdin.read().upper())",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate(b"hello child")
    assert (out, proc.returncode) == (b"HELLO CHILD\\n", 0)
    record(out=out.decode())

@pytest.mark.asyncio
async def test_timeouts(record):
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.sleep(10), 0.05)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await asyncio.sleep(10)
    record()

@pytest.mark.asyncio
async def test_expected_failure_is_reported(record):
    record()
    await asyncio.sleep(0)
    assert 1 + 1 == 3, "the failure a user would see"

def test_sync(record):
    record()
'''

TEST_ANYIO = '''
import sys
import anyio
import pytest

@pytest.mark.anyio
async def test_task_group_and_tcp(record, anyio_backend_name):
    async def serve(stream):
        async with stream:
            data = await stream.receive()
            await stream.send(data * 2)
    if anyio_backend_name == "trio":
        # the trio installed next to anyio may be older than anyio supports
        # for sockets; trio is here to show the plugin leaves it alone
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.sleep, 0)
        record(backend=anyio_backend_name)
        return
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve)
        async with await anyio.connect_tcp("127.0.0.1", port) as client:
            await client.send(b"ab")
            assert await client.receive() == b"abab"
        tg.cancel_scope.cancel()
    await listener.aclose()
    record(backend=anyio_backend_name)

@pytest.mark.anyio
async def test_cancel_scope_and_process(record, anyio_backend_name):
    with anyio.move_on_after(0.05) as scope:
        await anyio.sleep(10)
    assert scope.cancelled_caught
    result = await anyio.run_process([sys.executable, "-c", "print(6 * 7)"])
    assert result.stdout == b"42\\n"
    record(backend=anyio_backend_name)
'''

PYTEST_INI = '''
[pytest]
asyncio_default_fixture_loop_scope = function
asyncio_default_test_loop_scope = function
{extra}
'''

# 3 passing pytest-asyncio tests, 1 failing one, 1 sync test, 2 anyio tests
# per anyio backend (asyncio, and trio when installed)
ASYNCIO_TESTS = {"test_round_trip", "test_subprocess", "test_timeouts",
                 "test_expected_failure_is_reported"}
ANYIO_TESTS = {"test_task_group_and_tcp", "test_cancel_scope_and_process"}


# plugins the suite has no use for, that take seconds to load in each run
SLOW_PLUGINS_OFF = ["-p", "no:hypothesispytest", "-p", "no:benchmark"]


def _plugin_installed():
    """Whether the pytest11 entry point is installed (pip install of aioring);
    without it (a source checkout) the runs load the plugin with -p."""
    return any(ep.value == "aioring.pytest_plugin"
               for ep in importlib.metadata.entry_points(group="pytest11"))


@pytest.fixture
def suite(pytester, monkeypatch):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_asyncio_suite=TEST_ASYNCIO, test_anyio_suite=TEST_ANYIO)
    root = os.path.dirname(os.path.dirname(aioring.__file__))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        filter(None, [root, os.environ.get("PYTHONPATH")])))
    monkeypatch.delenv("PYTEST_ADDOPTS", raising=False)
    record_file = pytester.path / "record.jsonl"
    monkeypatch.setenv("AIORING_PLUGIN_RECORD", str(record_file))

    def run(*args, ini=""):
        pytester.makeini(PYTEST_INI.format(extra=ini))
        if record_file.exists():
            record_file.unlink()
        plugin = [] if _plugin_installed() else ["-p", "aioring.pytest_plugin"]
        result = pytester.runpytest_subprocess(
            *plugin, "-p", "no:cacheprovider", *SLOW_PLUGINS_OFF, "-v", *args,
            timeout=120)
        records = {}
        if record_file.exists():
            for line in record_file.read_text().splitlines():
                rec = json.loads(line)
                assert rec["test"] not in records, rec
                records[rec["test"]] = rec
        return result, records

    def stock():
        # the run without the opt-in, the same in every test: made once
        if not _STOCK_RUN:
            result, records = run()
            _STOCK_RUN.update(outcomes=result.parseoutcomes(), ids=set(records))
        return _STOCK_RUN["outcomes"], _STOCK_RUN["ids"]
    run.stock = stock
    return run


_STOCK_RUN = {}


def _backends():
    import anyio
    return list(getattr(anyio, "get_available_backends", lambda: ("asyncio",))())


def _name(nodeid):
    return nodeid.split("::")[1].split("[")[0]


def _check_common(result, records, *, asyncio_ids, anyio_ids):
    """Every test ran with the expected ids, passed (but the one meant to
    fail), and recorded what it got."""
    expected = {f"test_asyncio_suite.py::{t}{i}" for t in ASYNCIO_TESTS for i in asyncio_ids}
    expected |= {f"test_anyio_suite.py::{t}[{i}]" for t in ANYIO_TESTS for i in anyio_ids}
    expected.add("test_asyncio_suite.py::test_sync")
    assert set(records) == expected, result.stdout.str()
    n_fail = len(asyncio_ids)
    result.assert_outcomes(passed=len(expected) - n_fail, failed=n_fail)
    lines = result.stdout.lines
    assert sum(line.startswith("E       AssertionError: the failure a user would see")
               for line in lines) == n_fail
    for i in asyncio_ids:
        assert any(line.startswith(
            f"FAILED test_asyncio_suite.py::test_expected_failure_is_reported{i} ")
            for line in lines), i
    for nodeid, rec in records.items():
        if _name(nodeid) == "test_round_trip":
            assert rec["received"] == 256 * 400
        if _name(nodeid) == "test_subprocess":
            assert rec["out"] == "HELLO CHILD\n"
    assert records["test_asyncio_suite.py::test_sync"]["loop"] is None
    return {nodeid: rec["loop"] for nodeid, rec in records.items()}


def test_without_opt_in_the_stock_loop_runs_everything(suite):
    result, records = suite()
    backends = _backends()
    loops = _check_common(result, records, asyncio_ids=[""], anyio_ids=backends)
    assert "aioring:" not in result.stdout.str()
    for nodeid, loop in loops.items():
        if nodeid.endswith("[trio]"):
            assert loop is None and records[nodeid]["backend"] == "trio"
        elif nodeid != "test_asyncio_suite.py::test_sync":
            assert loop == STOCK, nodeid


@pytest.mark.parametrize("args, ini", [(["--aioring"], ""),
                                       (["--aioring-loop=on"], ""),
                                       ([], "aioring_loop = on"),
                                       (["--aioring"], "aioring_loop = off")])
def test_opt_in_runs_async_tests_on_aioring(suite, args, ini):
    stock_outcomes, stock_ids = suite.stock()
    result, records = suite(*args, ini=ini)
    backends = _backends()
    loops = _check_common(result, records, asyncio_ids=[""], anyio_ids=backends)
    result.stdout.fnmatch_lines(["aioring: loop=on (pytest-asyncio, anyio)"])
    # the same test ids, the same outcomes as on the stock loop
    assert set(records) == stock_ids
    assert result.parseoutcomes() == stock_outcomes
    for nodeid, loop in loops.items():
        if nodeid.endswith("[trio]"):
            assert loop is None and records[nodeid]["backend"] == "trio"
        elif nodeid != "test_asyncio_suite.py::test_sync":
            assert loop == AIORING, nodeid
            if "anyio" in nodeid:
                assert records[nodeid]["backend"] == "asyncio"


@pytest.mark.parametrize("args, ini", [(["--aioring-loop=both"], ""),
                                       ([], "aioring_loop = both")])
def test_both_runs_each_async_test_on_each_loop(suite, args, ini):
    stock, _ = suite.stock()
    result, records = suite(*args, ini=ini)
    backends = _backends()
    anyio_ids = [b for b in backends if b != "asyncio"] + ["asyncio", "aioring"]
    loops = _check_common(result, records, asyncio_ids=["[asyncio]", "[aioring]"],
                          anyio_ids=anyio_ids)
    result.stdout.fnmatch_lines(["aioring: loop=both (pytest-asyncio, anyio)"])
    for nodeid, loop in loops.items():
        if nodeid.endswith("[asyncio]"):
            assert loop == STOCK, nodeid
        elif nodeid.endswith("[aioring]"):
            assert loop == AIORING, nodeid
    # each async test once more than on the stock loop alone
    both = result.parseoutcomes()
    assert both["passed"] == stock["passed"] + len(ASYNCIO_TESTS) - 1 + len(ANYIO_TESTS)
    assert both["failed"] == 2 * stock["failed"] == 2


def test_command_line_off_overrides_ini(suite):
    result, records = suite("--aioring-loop=off", ini="aioring_loop = both")
    loops = _check_common(result, records, asyncio_ids=[""], anyio_ids=_backends())
    assert AIORING not in loops.values()


def test_a_conftest_hook_keeps_deciding(suite, pytester):
    # A suite with its own pytest_asyncio_loop_factories hook and anyio_backend
    # fixture (aioring's own tests/conftest.py is one) keeps them with --aioring.
    pytester.makeconftest(CONFTEST + '''
import aioring

def pytest_asyncio_loop_factories(config, item):
    return {"mine": asyncio.SelectorEventLoop, "ring": aioring.new_event_loop}

@pytest.fixture(params=["asyncio"])
def anyio_backend(request):
    return request.param
''')
    result, records = suite("--aioring")
    loops = _check_common(result, records, asyncio_ids=["[mine]", "[ring]"],
                          anyio_ids=["asyncio"])
    for nodeid, loop in loops.items():
        if nodeid.endswith("[mine]") or "anyio" in nodeid:
            assert loop == STOCK, nodeid
        elif nodeid.endswith("[ring]"):
            assert loop == AIORING, nodeid


def test_the_documented_conftest_snippets(suite, pytester):
    # the two conftest.py snippets of docs/integrations/pytest.md, verbatim
    root = os.path.dirname(os.path.dirname(aioring.__file__))
    path = os.path.join(root, "docs", "integrations", "pytest.md")
    if not os.path.exists(path):
        pytest.skip("not a source checkout")
    with open(path) as f:
        blocks = f.read().split("```python\n")[1:]
    blocks = [b.split("```")[0] for b in blocks]
    hook = [b for b in blocks if "def pytest_asyncio_loop_factories" in b]
    fixture = [b for b in blocks if "def anyio_backend" in b]
    assert len(hook) == len(fixture) == 1
    pytester.makeconftest(CONFTEST + hook[0] + fixture[0])
    result, records = suite()
    loops = _check_common(result, records, asyncio_ids=["[asyncio]", "[aioring]"],
                          anyio_ids=["aioring"])
    for nodeid, loop in loops.items():
        if nodeid.endswith("[asyncio]"):
            assert loop == STOCK, nodeid
        elif nodeid.endswith("[aioring]"):
            assert loop == AIORING, nodeid


def test_bad_ini_value_is_a_usage_error(suite):
    result, records = suite(ini="aioring_loop = yes")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*aioring_loop = 'yes': expected one of off, on, both*"])
    assert records == {}


def test_entry_point_is_declared():
    if sys.version_info < (3, 11):
        pytest.skip("tomllib")
    import tomllib
    root = os.path.dirname(os.path.dirname(aioring.__file__))
    path = os.path.join(root, "pyproject.toml")
    if not os.path.exists(path):
        pytest.skip("not a source checkout")
    with open(path, "rb") as f:
        project = tomllib.load(f)["project"]
    # entry point name == module name, so `-p aioring.pytest_plugin` and
    # `pytest_plugins = ["aioring.pytest_plugin"]` stay harmless when the
    # entry point already loaded it
    assert project["entry-points"]["pytest11"] == {
        "aioring.pytest_plugin": "aioring.pytest_plugin"}
