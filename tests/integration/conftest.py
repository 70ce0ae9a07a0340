"""Integration tests: the frameworks, clients and tools people run, on the
stock loop and on aioring (tests/conftest.py runs every async test on both;
synchronous tests take the `loop_name` fixture).

Servers (PostgreSQL, Redis) are started by .ci/run through
tests/integration/servers.py, which exports their addresses:
AIORING_TEST_PG_DSN and AIORING_TEST_REDIS_URL.  Without them a test that
needs one is skipped, unless AIORING_INTEGRATION_REQUIRED=1 (CI sets it),
where it fails.
"""
import os

import pytest


def _server_address(variable, what):
    value = os.environ.get(variable)
    if not value:
        message = (f"{variable} is not set: start {what} with "
                   f"`eval \"$(python tests/integration/servers.py start DIR)\"`")
        if os.environ.get("AIORING_INTEGRATION_REQUIRED") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return value


@pytest.fixture(scope="session")
def pg_dsn():
    """The DSN of a PostgreSQL server to test against."""
    return _server_address("AIORING_TEST_PG_DSN", "PostgreSQL")


@pytest.fixture(scope="session")
def redis_url():
    """The URL of a Redis server to test against."""
    return _server_address("AIORING_TEST_REDIS_URL", "Redis")
