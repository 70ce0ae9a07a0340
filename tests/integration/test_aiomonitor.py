"""aiomonitor attached to the stock loop and to aioring.

`aiomonitor.start_monitor(loop)` runs its telnet UI and its web UI (an aiohttp
app, always started in 0.7.1: there is no switch to turn it off) on a loop
of its own, in a thread, made by `asyncio.run()`, so by the event loop
policy.  Both set-ups are tested: the UI on the stock loop (the default), and
on aioring (aioring's policy installed while the monitor starts), each with
the monitored loop being the test's loop (tests/conftest.py: stock and
aioring).

The test talks telnet to the monitor (answering the terminal-type
negotiation prompt_toolkit waits for), runs `ps -f`, `where` and `cancel`,
and uses the web UI's JSON API to list and cancel tasks; the transcript,
with task ids and Task-N numbers masked, must equal the one of the same
session on a fresh stock loop.
"""
import asyncio
import re
import socket

import pytest

aiomonitor = pytest.importorskip("aiomonitor")
import aiohttp  # noqa: E402

import aioring  # noqa: E402

PROMPT = b"monitor >>> "
# ANSI escapes (CSI and charset selection) and telnet commands
NOISE = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]"
                   rb"|\xff\xfa.*?\xff\xf0|\xff[\xfb-\xfe].|\xff[\xf0-\xfa]",
                   re.S)
IAC, SB, SE, WILL = b"\xff", b"\xfa", b"\xf0", b"\xfb"
TTYPE, NAWS = b"\x18", b"\x1f"
# We will send our terminal type (prompt_toolkit waits for it) and a window
# of 200 x 50 (so the task table is not cut).
HELLO = (IAC + WILL + TTYPE + IAC + SB + TTYPE + b"\x00xterm" + IAC + SE +
         IAC + WILL + NAWS + IAC + SB + NAWS + b"\x00\xc8\x00\x32" + IAC + SE)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Telnet:
    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer
        self.raw = b""
        self.pos = 0          # cleaned text consumed up to here

    @property
    def text(self):
        text = NOISE.sub(b"", self.raw).replace(b"\r", b"").decode("utf-8", "replace")
        return re.sub(r".\x08", "", text)    # a character and a backspace

    async def expect(self, pattern, timeout=10):
        """Wait until `pattern` appears after the consumed text; consume up
        to its end and return the text from the previous position."""
        rx = re.compile(pattern)
        async with asyncio.timeout(timeout):
            while True:
                m = rx.search(self.text, self.pos)
                if m:
                    out = self.text[self.pos:m.end()]
                    self.pos = m.end()
                    return out
                chunk = await self.reader.read(65536)
                assert chunk, f"the monitor closed the connection: {self.text!r}"
                # answer prompt_toolkit's cursor position requests (else it
                # waits a second for each, then warns)
                self.writer.write(b"\x1b[1;1R" * chunk.count(b"\x1b[6n"))
                self.raw += chunk

    async def command(self, cmd, until):
        """Run `cmd`; wait for `until`; return the command's output lines
        (without the prompt redraws and the echo of the command)."""
        # a bare CR: prompt_toolkit takes a following LF as a second, empty
        # command, which repeats the last one
        self.writer.write(cmd.encode() + b"\r")
        out = await self.expect(until)
        lines = []
        for line in out.splitlines():
            line = line.rpartition(PROMPT.decode())[2].rstrip()
            if line and line != cmd:
                lines.append(line)
        return "\n".join(lines)


def mask(text, ids):
    for name, tid in ids.items():
        text = text.replace(tid, f"<{name}>")
    text = re.sub(r"Task-\d+", "Task-N", text)
    text = re.sub(r"0x[0-9a-f]+", "0x?", text)
    # column widths follow the lengths of the ids
    text = re.sub(r"\+-+\+", "+---+", text)
    return re.sub(r"(?<=\S)  +(?=\S)", "  ", text)


async def monitor_session(ui_on_aioring):
    """Start aiomonitor on the running loop, drive it; return what the
    monitor showed (masked) and what the program saw."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Event()

    async def probe_sleeper():
        await asyncio.sleep(3600)

    async def probe_waiter():
        await gate.wait()  # PROBE_WAITER_LINE

    sleeper = asyncio.create_task(probe_sleeper(), name="probe-sleeper")
    waiter = asyncio.create_task(probe_waiter(), name="probe-waiter")
    await asyncio.sleep(0)
    ids = {"sleeper": str(id(sleeper)), "waiter": str(id(waiter))}
    ports = dict(port=free_port(), webui_port=free_port(),
                 console_port=free_port())
    got = {}

    old_policy = asyncio.get_event_loop_policy()
    if ui_on_aioring:
        asyncio.set_event_loop_policy(aioring.EventLoopPolicy())
    try:
        monitor = aiomonitor.start_monitor(loop, **ports)
    finally:
        asyncio.set_event_loop_policy(old_policy)
    try:
        got["ui_loop_is_aioring"] = isinstance(monitor._ui_loop, aioring.Loop)
        reader, writer = await asyncio.open_connection("127.0.0.1", ports["port"])
        try:
            writer.write(HELLO)
            t = Telnet(reader, writer)
            got["intro"] = re.sub(r"\d+ tasks", "N tasks",
                                  (await t.expect(re.escape(PROMPT.decode())))
                                  .split("\n", 1)[1])
            ps = mask(await t.command(
                "ps -f probe", r"(?:\+-+\+\n(?:\|.*\n)*){2}\+-+\+\n"), ids)
            # rows come in the order of id(task): sort them
            head, sep, rows = ps.rpartition("+---+\n")
            rows, sep2, tail = rows.rpartition("\n")
            got["ps"] = head + sep + "\n".join(sorted(rows.split("\n"))) + sep2 + tail
            got["where"] = mask(await t.command(
                "where " + ids["waiter"], r"\n *await fut\n"), ids)
            got["cancel"] = mask(await t.command(
                "cancel " + ids["sleeper"], r"Cancelled task \d+"), ids)
            await asyncio.wait([sleeper], timeout=10)
            got["sleeper_cancelled"] = sleeper.cancelled()
            got["bad_cancel"] = mask(await t.command(
                "cancel 12345", r"ValueError.*\)\n"), ids)

            # the web UI (aiohttp on the monitor's loop)
            base = f"http://127.0.0.1:{ports['webui_port']}"
            async with aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=20)) as s:
                async with s.get(base + "/") as r:
                    got["webui_index"] = (r.status, "<html" in (await r.text()).lower())
                async with s.post(base + "/api/live-tasks",
                                  data={"filter": "probe", "persistent": "false"}) as r:
                    got["webui_tasks"] = sorted(
                        (x["name"], x["coro"], x["state"], x["task_id"] == ids["waiter"])
                        for x in (await r.json())["tasks"])
                async with s.delete(base + "/api/task",
                                    params={"task_id": ids["waiter"]}) as r:
                    body = await r.json()
                    got["webui_cancel"] = (r.status, mask(body["msg"], ids),
                                           body["detail"])
            await asyncio.wait([waiter], timeout=10)
            got["waiter_cancelled"] = waiter.cancelled()
            writer.write(b"exit\r")
            await asyncio.wait_for(reader.read(), 10)    # up to EOF
            got["exit_closed_connection"] = reader.at_eof()
        finally:
            writer.close()
            await writer.wait_closed()
    finally:
        monitor.close()
        for task in (sleeper, waiter):
            task.cancel()
        await asyncio.gather(sleeper, waiter, return_exceptions=True)
    got["closed"] = monitor.closed
    return got


with open(__file__) as _f:
    PROBE_WAITER_LINE = next(i for i, line in enumerate(_f, 1)
                             if line.endswith("# PROBE_WAITER_LINE\n")
                             and "await" in line)
WAIT_LINE = next(i for i, line in enumerate(
    open(asyncio.locks.__file__), 1) if line.strip() == "await fut"
    and i > asyncio.locks.Event.wait.__code__.co_firstlineno)


def monitor_session_on_stock(ui_on_aioring):
    with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
        return runner.run(monitor_session(ui_on_aioring))


@pytest.mark.parametrize("ui", ["stock-ui", "aioring-ui"])
async def test_monitor(ui):
    ui_on_aioring = ui == "aioring-ui"
    got = await monitor_session(ui_on_aioring)

    assert got["ui_loop_is_aioring"] is ui_on_aioring
    assert "Asyncio Monitor: N tasks running" in got["intro"]
    ps = got["ps"]
    assert "2 tasks running (showing 2 tasks)" in ps
    assert ps.splitlines()[:4] == [
        "2 tasks running (showing 2 tasks)", "+---+",
        "| Task ID  State  Name  Coroutine  Created Location  Since |", "+---+"]
    rows = sorted(line.split()[1:6] for line in ps.splitlines()
                  if line.startswith("| <"))
    assert rows == [
        ["<sleeper>", "PENDING", "probe-sleeper",
         "monitor_session.<locals>.probe_sleeper()", "-"],
        ["<waiter>", "PENDING", "probe-waiter",
         "monitor_session.<locals>.probe_waiter()", "-"]]
    where = got["where"].splitlines()
    assert where[0] == ("Stack of the root task or coroutine scheduled in the "
                        "event loop (most recent call last)")
    assert where[2:] == [
        "Stack of <Task name=probe-waiter coro=monitor_session.<locals>."
        "probe_waiter()> (most recent call last)",
        f'  File "{__file__}", line {PROBE_WAITER_LINE}, in probe_waiter',
        "    await gate.wait()  # PROBE_WAITER_LINE",
        f'  File "{asyncio.locks.__file__}", line {WAIT_LINE}, in wait',
        "    await fut"]
    assert got["cancel"] == "\u2713 Cancelled task <sleeper>"
    assert got["sleeper_cancelled"] is True
    assert got["bad_cancel"] == \
        "\u2717 ValueError('Invalid or non-existent task ID', '12345')"
    assert got["webui_index"] == (200, True)
    assert got["webui_tasks"] == [      # the sleeper is cancelled by now
        ("probe-waiter", "monitor_session.<locals>.probe_waiter()", "PENDING", True)]
    assert got["webui_cancel"] == (200, "Successfully cancelled <waiter>",
                                   "monitor_session.<locals>.probe_waiter()")
    assert got["waiter_cancelled"] is True
    assert got["exit_closed_connection"] is True
    assert got["closed"] is True

    if isinstance(asyncio.get_running_loop(), aioring.Loop):
        # the same session on a fresh stock loop shows the same
        stock = await asyncio.to_thread(monitor_session_on_stock, ui_on_aioring)
        assert got == stock
