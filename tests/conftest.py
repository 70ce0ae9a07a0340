"""Every async test runs twice: on the stock asyncio loop and on aioring.

pytest-asyncio (>= 1.4) parametrizes each async test over the loop factories
this hook returns; the test ids end in [asyncio] or [aioring].  Synchronous
tests that need a loop take the `any_loop` fixture, which is parametrized the
same way.  A user runs their own suite on aioring with the same hook
(docs/testing.md).
"""
import asyncio

import pytest

import aioring
from _loop_helpers import LOOP_FACTORIES
from _stream_helpers import short_tmpdir


def pytest_asyncio_loop_factories(config, item):
    return LOOP_FACTORIES


@pytest.fixture(params=list(LOOP_FACTORIES))
def loop_name(request):
    return request.param


@pytest.fixture
def any_loop(loop_name):
    """A fresh, not running loop of each kind; closed after the test."""
    loop = LOOP_FACTORIES[loop_name]()
    try:
        yield loop
    finally:
        if not loop.is_closed():
            loop.close()


@pytest.fixture
def sdir():
    """A short temporary directory, for AF_UNIX socket paths."""
    with short_tmpdir() as d:
        yield d
