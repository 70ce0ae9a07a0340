"""The soak test's CI mode (tests/soak.py; docs/testing.md): a few rounds
of a few hundred connections with random scripts, UDP, pipes and
subprocesses, on the stock loop and on aioring, every check of the full
mode applied (every byte, descriptors, fixed-file slots, receive buffers,
RSS).  The stock loop's run shows the test itself is right.

SOAK_CI_CONNECTIONS, SOAK_CI_ROUNDS and SOAK_SEED change the run; a failure
prints the seed that replays it: python tests/soak.py --seed N ...
"""
import asyncio
import os
import random
import resource

import pytest

import soak
from _loop_helpers import LOOP_FACTORIES

CONNECTIONS = int(os.environ.get("SOAK_CI_CONNECTIONS", 300))
ROUNDS = int(os.environ.get("SOAK_CI_ROUNDS", 5))


@pytest.fixture
def nofile():
    saved = resource.getrlimit(resource.RLIMIT_NOFILE)
    soak.raise_nofile(CONNECTIONS)
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, saved)


def test_soak_ci_mode(loop_name, nofile):
    seed = int(os.environ.get("SOAK_SEED", random.randrange(1 << 32)))
    lines = []
    with asyncio.Runner(loop_factory=LOOP_FACTORIES[loop_name]) as runner:
        rep = runner.run(soak.soak(CONNECTIONS, rounds=ROUNDS, seed=seed,
                                   log=lines.append))
    report = "\n".join(lines) + "\n" + soak.format_report(rep)
    print(report)
    assert not rep["failures"], report
    st = rep["stats"]
    assert rep["rounds"] == ROUNDS
    assert st["connections"] == CONNECTIONS * ROUNDS
    assert st["strict"] > 0 and st["resets"] > 0
    assert st["udp_datagrams"] > 0 and st["pipe_bytes"] > 0 and st["subprocesses"] > 0
    names = [name for name, ok, _ in rep["checks"]]
    assert "open fds back to start" in names
    assert any(name.startswith("RSS") for name in names)
    if loop_name == "aioring":
        assert "fixed-file slots back to start" in names
        if rep["end"]["buffers_available"] is not None:
            assert "receive buffers all back in the ring" in names
