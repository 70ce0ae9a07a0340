"""pytest plugin: run a test suite's async tests on aioring, on request.

Installing aioring registers this module as a pytest plugin (the
``pytest11`` entry point ``aioring.pytest_plugin``).  It changes nothing
until asked to:

    pytest --aioring                 # async tests run on aioring
    pytest --aioring-loop=both       # on the stock loop and on aioring
    pytest --aioring-loop=off        # as without the plugin (the default)

or in the ini file: ``aioring_loop = on`` (``off``, ``on``, ``both``); the
command line wins.

What it changes when on:

- pytest-asyncio (>= 1.4): it implements the ``pytest_asyncio_loop_factories``
  hook, returning ``{"aioring": aioring.new_event_loop}`` (``on``; the test
  ids stay as they were) or ``{"asyncio": asyncio.SelectorEventLoop,
  "aioring": aioring.new_event_loop}`` (``both``; the ids end in
  ``[asyncio]`` and ``[aioring]``).  The hook implementation runs last: a
  ``conftest.py`` that implements the hook itself keeps deciding.
- anyio: it overrides the ``anyio_backend`` fixture, whose asyncio parameter
  becomes ``("asyncio", {"loop_factory": aioring.new_event_loop})`` (id
  ``asyncio``; ``both`` adds the stock loop, the ids being ``asyncio`` and
  ``aioring``); the other backends anyio finds (trio) stay.  An
  ``anyio_backend`` fixture of the suite's own (in a ``conftest.py`` or a
  test module) overrides this one, as it overrides anyio's.

See docs/integrations/pytest.md.
"""
import asyncio
import types

import pytest

MODES = ("off", "on", "both")
HOOK = "pytest_asyncio_loop_factories"


def pytest_addoption(parser):
    group = parser.getgroup("aioring")
    group.addoption(
        "--aioring", action="store_const", const="on", dest="aioring_loop",
        default=None,
        help="run async tests (pytest-asyncio, anyio) on aioring "
             "(same as --aioring-loop=on)")
    group.addoption(
        "--aioring-loop", choices=MODES, dest="aioring_loop", default=None,
        metavar="MODE",
        help="which loop async tests run on: off (the stock loop, the "
             "default), on (aioring), both (each test twice: [asyncio] and "
             "[aioring]); overrides the aioring_loop ini option")
    parser.addini(
        "aioring_loop", default="off",
        help="default for --aioring-loop: off, on or both")


def _mode(config):
    mode = config.getoption("aioring_loop")
    if mode is None:
        mode = (config.getini("aioring_loop") or "off").strip().lower()
        if mode not in MODES:
            raise pytest.UsageError(
                f"aioring_loop = {mode!r}: expected one of {', '.join(MODES)}")
    return mode


def _factories(mode):
    import aioring
    if mode == "both":
        return {"asyncio": asyncio.SelectorEventLoop,
                "aioring": aioring.new_event_loop}
    return {"aioring": aioring.new_event_loop}


class _AsyncioLoopFactories:
    """pytest-asyncio's loop factories; registered only when opted in (an
    implementation of the hook that returns None is an error to
    pytest-asyncio)."""

    def __init__(self, factories):
        self.factories = factories

    @pytest.hookimpl(trylast=True)
    def pytest_asyncio_loop_factories(self, config, item):
        return self.factories


def _anyio_backends(mode):
    import anyio
    import aioring
    names = getattr(anyio, "get_available_backends", lambda: ("asyncio",))()
    params = []
    for name in names:
        if name != "asyncio":
            params.append(pytest.param(name, id=name))
            continue
        if mode == "both":
            params.append(pytest.param(
                ("asyncio", {"loop_factory": asyncio.SelectorEventLoop}),
                id="asyncio"))
            params.append(pytest.param(
                ("asyncio", {"loop_factory": aioring.new_event_loop}),
                id="aioring"))
        else:
            params.append(pytest.param(
                ("asyncio", {"loop_factory": aioring.new_event_loop}),
                id="asyncio"))
    return params


def _anyio_plugin(mode):
    # a module object holds the fixture (pytest 9.2 deprecates module-scoped
    # fixtures that are methods of an instance)
    @pytest.fixture(scope="module", params=_anyio_backends(mode))
    def anyio_backend(request):
        return request.param

    plugin = types.ModuleType(f"{__name__}._anyio_backend")
    plugin.anyio_backend = anyio_backend
    return plugin


def pytest_configure(config):
    mode = _mode(config)
    if mode == "off":
        return
    pm = config.pluginmanager
    if not pm.has_plugin("asyncio") and not pm.has_plugin("anyio"):
        raise pytest.UsageError(
            f"--aioring-loop={mode}: neither pytest-asyncio nor anyio's "
            "pytest plugin is loaded, so no test would run on aioring")
    if pm.has_plugin("asyncio"):
        if not hasattr(config.hook, HOOK):
            raise pytest.UsageError(
                f"--aioring-loop={mode} needs pytest-asyncio 1.4 or newer "
                f"(its {HOOK} hook)")
        pm.register(_AsyncioLoopFactories(_factories(mode)),
                    "aioring-asyncio-loop-factories")
    if pm.has_plugin("anyio"):
        pm.register(_anyio_plugin(mode), "aioring-anyio-backend")


def pytest_report_header(config):
    mode = _mode(config)
    if mode == "off":
        return None
    frameworks = [name for plugin, name in (("asyncio", "pytest-asyncio"),
                                            ("anyio", "anyio"))
                  if config.pluginmanager.has_plugin(plugin)]
    return [f"aioring: loop={mode} ({', '.join(frameworks)})"]
