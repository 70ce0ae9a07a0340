"""The soak test: many connections, datagrams, pipes and subprocesses at
once, every byte checked, and the process's resources back where they were.

    python tests/soak.py --minutes 10                 # aioring, 1,000 connections
    python tests/soak.py --rounds 3 --loop asyncio    # the stock loop
    python tests/soak.py --seed 1234 ...              # replay a run

Not a test module (tests/test_soak.py runs its CI mode on both loops).

A run is a number of rounds (or as many as fit in --minutes); each round
starts its servers, runs everything below at once, checks it, and closes
the servers:

- `--connections` TCP and Unix connections, spread over 1 s, to echo
  servers of three kinds (a Protocol with flow control, a BufferedProtocol,
  a streams handler).  Each connection follows a script drawn from the
  seed and its id, which both ends rebuild on their own: 1 to 4 frames of
  1 B to 1 MiB (log-uniform; a header with the payload's SHA-256), written
  whole or in random pieces, and one ending: close after reading the echo,
  half-close (write_eof) and read to EOF, the server closing after the last
  byte, the client resetting after a random number of bytes (abort() or
  SO_LINGER 0 + close()), the server resetting likewise, or the client
  closing with echo still unread (a reset from its kernel).  Both ends
  compare every byte they receive with the script's bytes and check each
  payload's SHA-256; where a reset may cut the stream, what was received
  must be a prefix of what was sent, and where none may, all of it must
  arrive, with EOF where the script has one and no error.
- UDP echo: clients send datagrams of 0 B to 60 KB (header with SHA-256),
  one at a time, resent after a timeout (loopback drops datagrams when a
  socket's buffer is full); every echo must be the datagram sent.
- Pipes: os.pipe() through connect_write_pipe / connect_read_pipe, up to
  4 MiB in random writes, read back to EOF and compared.
- Subprocesses: `cat` echoing up to 1 MiB (compared), `true` and `false`
  (exit codes 0 and 1).

Resources are measured with the loop idle and after gc.collect(): open
descriptors (/proc/self/fd), aioring's fixed-file slots in use, receive
buffers (provided, and held ready by the kernel: equal when none is lost)
and RSS (VmRSS).  Descriptors and slots must be back to their level before
the first round, every provided receive buffer back in the kernel's hands,
and RSS within 5% of its level after the first round: that round is a
warm-up, in which the allocator's pools, the loop's receive-buffer pool (it
doubles when a recv finds none, and never shrinks) and the interpreter's
caches grow to the size this workload needs, once.  The receive-buffer
pool may still double in a later round whose burst is bigger than the
warm-up's (by design: it never shrinks); what it grew by since the warm-up
is set aside from the RSS comparison and shown.  RSS is measured after
malloc_trim(0) (glibc; SOAK_MALLOC_TRIM=0 turns it off): without it, RSS
after a round reflects that round's peak (free heap glibc keeps), which
varies with the random mix, on both loops; the figure before the trim is
shown too.
"""
import argparse
import asyncio
import gc
import hashlib
import os
import random
import resource
import shutil
import socket
import struct
import sys
import tempfile
import time

MAGIC = b"SOAKSOAK"
PREAMBLE = 16                  # MAGIC + the connection id (8 bytes)
FRAME_HEADER = 48              # b'FRM1', index (4), length (8), SHA-256 (32)
MAX_FRAME = 1 << 20
ROUND_TIMEOUT = float(os.environ.get("SOAK_ROUND_TIMEOUT", 120))           # a round that takes longer hangs
START_SPREAD = 1.0             # connections start within this many seconds
RESETS = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)

# endings; the strict ones lose no byte and see no error
ENDS = ("close", "half_close", "server_close", "client_reset", "server_reset",
        "client_early_close")
STRICT = {"close", "half_close", "server_close"}
END_WEIGHTS = (3, 3, 2, 2, 2, 2)
SERVER_KINDS = ("protocol", "buffered", "streams")
FAMILIES = ("tcp", "unix")


class Mismatch(Exception):
    pass


def _size(rng):
    r = rng.random()
    if r < 0.02:
        return 1
    if r < 0.04:
        return MAX_FRAME
    return min(MAX_FRAME, int(2 ** rng.uniform(0, 20)))


class Script:
    """What connection `conn_id` does; both ends build it from the seed."""

    def __init__(self, seed, conn_id):
        self.seed = seed
        self.conn_id = conn_id
        rng = random.Random(f"{seed}:{conn_id}")
        self.family = rng.choice(FAMILIES)
        self.server_kind = rng.choice(SERVER_KINDS)
        self.sizes = [_size(rng) for _ in range(rng.randint(1, 4))]
        self.end = rng.choices(ENDS, END_WEIGHTS)[0]
        self.total = PREAMBLE + sum(FRAME_HEADER + n for n in self.sizes)
        self.cut = rng.randint(PREAMBLE, self.total)   # where a reset comes
        self.linger = rng.random() < 0.5               # SO_LINGER 0 vs abort()
        self.pieces_written = rng.random() < 0.3       # frames in random pieces
        self.delay = rng.random() * START_SPREAD
        self.write_seed = rng.random()

    def payload(self, i):
        return random.Random(f"{self.seed}:{self.conn_id}:{i}").randbytes(self.sizes[i])

    def pieces(self):
        """The stream the client sends: (kind, bytes) pieces."""
        yield "preamble", MAGIC + self.conn_id.to_bytes(8, "big")
        for i, n in enumerate(self.sizes):
            p = self.payload(i)
            yield "header", (b"FRM1" + i.to_bytes(4, "big") + n.to_bytes(8, "big")
                             + hashlib.sha256(p).digest())
            yield "payload", p


class Verifier:
    """Compares a received byte stream with a script's, chunk by chunk, and
    checks each payload's SHA-256 against the header received before it."""

    def __init__(self, script):
        self.gen = script.pieces()
        self.kind, self.cur, self.pos = None, b"", 0
        self.count = 0
        self.sha = None
        self.header = None

    def feed(self, data):
        off = 0
        n_data = len(data)
        while off < n_data:
            while self.pos == len(self.cur):
                self._next()
            n = min(n_data - off, len(self.cur) - self.pos)
            got = data[off:off + n]
            if got != self.cur[self.pos:self.pos + n]:
                raise Mismatch(f"byte {self.count} differs")
            if self.kind == "payload":
                self.sha.update(got)
            self.pos += n
            off += n
            self.count += n
            if self.pos == len(self.cur):
                self._piece_done()

    def _next(self):
        try:
            self.kind, self.cur = next(self.gen)
        except StopIteration:
            raise Mismatch(f"{self.count} bytes expected, more received") from None
        self.pos = 0
        if self.kind == "payload":
            self.sha = hashlib.sha256()
            if not self.cur:
                self._piece_done()

    def _piece_done(self):
        if self.kind == "header":
            self.header = self.cur      # as received: it compared equal
        elif self.kind == "payload":
            if self.sha.digest() != self.header[16:]:
                raise Mismatch(f"SHA-256 of the payload ending at byte {self.count} differs")


class Ctx:
    def __init__(self, seed, loop):
        self.seed = seed
        self.loop = loop
        self.failures = []
        self.records = {}          # conn_id -> server record
        self.anonymous = []        # server records of connections that sent < 16 bytes
        self.accepted = 0
        self.active = 0
        self.idle = asyncio.Event()
        self.idle.set()
        self.ids = set()
        self.pending = {}          # conn_id -> what the client is doing
        self.live = {}             # conn_id -> (verifier, reader, writer)
        self.sides = set()         # server sides not finished
        self.stats = dict(connections=0, strict=0, bytes_checked=0, resets=0,
                          udp_datagrams=0, udp_resent=0, pipe_bytes=0,
                          subprocesses=0, frames=0)

    def fail(self, what):
        if len(self.failures) < 200:
            self.failures.append(what)


class ServerSide:
    """One accepted connection's checks, shared by the three server kinds."""

    def __init__(self, ctx):
        self.ctx = ctx
        ctx.accepted += 1
        ctx.active += 1
        ctx.idle.clear()
        ctx.sides.add(self)
        self.head = b""
        self.verifier = None
        self.script = None
        self.count = 0
        self.eof = False
        self.error = None
        self.finished = False
        self.acted = False
        self.transport = None

    def feed(self, data):
        """Check `data`; returns what the script says to do now: None,
        'close' or 'reset'."""
        self.count += len(data)
        if self.verifier is None:
            self.head += data
            if not MAGIC.startswith(self.head[:8]):
                raise Mismatch("bad preamble %r" % self.head[:16])
            if len(self.head) < PREAMBLE:
                return None
            conn_id = int.from_bytes(self.head[8:16], "big")
            if conn_id not in self.ctx.ids or conn_id in self.ctx.records:
                raise Mismatch(f"unknown or repeated connection id {conn_id}")
            self.script = Script(self.ctx.seed, conn_id)
            self.verifier = Verifier(self.script)
            data, self.head = self.head, None
        self.verifier.feed(data)
        if self.acted:
            return None
        s = self.script
        if s.end == "server_reset" and self.count >= s.cut:
            self.acted = True
            return "reset"
        if s.end == "server_close" and self.count == s.total:
            self.acted = True
            return "close"
        return None

    def finish(self, exc=None):
        if self.finished:
            return
        self.finished = True
        if exc is not None and self.error is None:
            self.error = exc
        if isinstance(self.error, Mismatch):
            self.ctx.fail(f"server: {self.error} (script {self._desc()})")
        elif self.error is not None and not isinstance(self.error, RESETS):
            self.ctx.fail(f"server: {self.error!r} (script {self._desc()})")
        if self.verifier is not None:
            self.ctx.records[self.script.conn_id] = self
        else:
            self.ctx.anonymous.append(self)
        self.ctx.active -= 1
        self.ctx.sides.discard(self)
        if not self.ctx.active:
            self.ctx.idle.set()

    def _desc(self):
        s = self.script
        if s is None:
            return f"anonymous, {self.count} bytes"
        return (f"id={s.conn_id} end={s.end} {s.family}/{s.server_kind} "
                f"total={s.total} cut={s.cut} received={self.count}")


def _reset(transport, linger):
    if linger:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.close()
            return
    transport.abort()


class EchoProtocol(asyncio.Protocol):
    def __init__(self, ctx):
        self.side = ServerSide(ctx)

    def connection_made(self, transport):
        self.t = transport
        self.side.transport = transport

    def data_received(self, data):
        try:
            act = self.side.feed(data)
        except Mismatch as exc:
            self.side.error = exc
            self.t.abort()
            return
        self.t.write(data)
        if act == "reset":
            _reset(self.t, self.side.script.linger)
        elif act == "close":
            self.t.close()

    def eof_received(self):
        self.side.eof = True
        return None                 # close

    def pause_writing(self):
        self.t.pause_reading()

    def resume_writing(self):
        self.t.resume_reading()

    def connection_lost(self, exc):
        self.side.finish(exc)


class BufferedEchoProtocol(EchoProtocol, asyncio.BufferedProtocol):
    def __init__(self, ctx):
        super().__init__(ctx)
        self.buf = bytearray(32 * 1024)

    def get_buffer(self, sizehint):
        return self.buf

    def buffer_updated(self, nbytes):
        self.data_received(bytes(self.buf[:nbytes]))


def streams_handler(ctx):
    async def handle(reader, writer):
        side = ServerSide(ctx)
        side.transport = writer.transport
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    side.eof = True
                    break
                act = side.feed(data)
                writer.write(data)
                if act == "reset":
                    _reset(writer.transport, side.script.linger)
                    break
                await writer.drain()
                if act == "close":
                    break
            writer.close()
            await writer.wait_closed()
        except (Mismatch, *RESETS) as exc:
            side.error = exc
            writer.transport.abort()
        except BaseException as exc:
            side.error = exc
            writer.transport.abort()
            if not isinstance(exc, Exception):
                raise
        finally:
            side.finish()
    return handle


async def start_servers(ctx, sdir, tag):
    loop = ctx.loop
    servers, addrs = [], {}
    for family in FAMILIES:
        for kind in SERVER_KINDS:
            if family == "tcp":
                where = dict(host="127.0.0.1", port=0)
            else:
                where = dict(path=os.path.join(sdir, f"{tag}-{kind}"))
            if kind == "streams":
                start = asyncio.start_server if family == "tcp" else asyncio.start_unix_server
                srv = await start(streams_handler(ctx), backlog=2048, **where)
            else:
                cls = EchoProtocol if kind == "protocol" else BufferedEchoProtocol
                create = loop.create_server if family == "tcp" else loop.create_unix_server
                srv = await create(lambda cls=cls: cls(ctx), backlog=2048, **where)
            servers.append(srv)
            addrs[family, kind] = srv.sockets[0].getsockname()
    return servers, addrs


async def _write_script(writer, script, limit):
    """Write the script's stream up to `limit` bytes."""
    rng = random.Random(script.write_seed)
    sent = 0
    for _, piece in script.pieces():
        if sent >= limit:
            break
        piece = piece[:limit - sent]
        if script.pieces_written and len(piece) > 1:
            off = 0
            while off < len(piece):
                n = rng.randint(1, 65536)
                writer.write(piece[off:off + n])
                off += n
                if rng.random() < 0.3:
                    await writer.drain()
        else:
            writer.write(piece)
        sent += len(piece)
        await writer.drain()
    return sent


async def _read_into(reader, verifier, stop_at=None):
    """Read and check until EOF ('eof') or `stop_at` bytes ('stopped')."""
    while stop_at is None or verifier.count < stop_at:
        n = 65536 if stop_at is None else min(65536, stop_at - verifier.count)
        data = await reader.read(n)
        if not data:
            return "eof"
        verifier.feed(data)
    return "stopped"


async def _connect(ctx, addrs, s):
    """Open script s's connection (after its delay) and register it: its
    verifier, reader, writer and a fresh result record."""
    await asyncio.sleep(s.delay)
    addr = addrs[s.family, s.server_kind]
    if s.family == "tcp":
        reader, writer = await asyncio.open_connection(*addr)
    else:
        reader, writer = await asyncio.open_unix_connection(addr)
    ctx.stats["connections"] += 1
    v = Verifier(s)
    ctx.live[s.conn_id] = (v, reader, writer)
    return v, reader, writer, dict(error=None, read="", sent=0)


async def client(ctx, addrs, conn_id):
    s = Script(ctx.seed, conn_id)
    v, reader, writer, result = await _connect(ctx, addrs, s)
    rng = random.Random(s.write_seed + 1)

    async def read(stop_at=None):
        try:
            result["read"] = await _read_into(reader, v, stop_at)
        except Mismatch as exc:
            ctx.fail(f"client: {exc} (id={conn_id} end={s.end} {s.family}/{s.server_kind})")
            result["read"] = "mismatch"
            writer.transport.abort()
        except RESETS as exc:
            result["error"] = exc
            result["read"] = "error"

    async def write(limit):
        try:
            result["sent"] = await _write_script(writer, s, limit)
        except RESETS as exc:
            result["error"] = exc

    try:
        if s.end == "close":
            await asyncio.gather(read(s.total), write(s.total))
            writer.close()
            await writer.wait_closed()
        elif s.end == "server_close":
            await asyncio.gather(read(), write(s.total))
            writer.close()
            await writer.wait_closed()
        elif s.end == "client_reset":
            r = asyncio.ensure_future(read())
            await write(s.cut)
            if s.linger:
                # close() (which SO_LINGER 0 turns into a reset) would wait
                # for what is still buffered, which the server (not reading
                # while its echo waits) may never take: all of it sent first
                writer.transport.set_write_buffer_limits(high=0)
                try:
                    await writer.drain()
                except RESETS as exc:
                    result["error"] = exc
            if rng.random() < 0.5:
                await asyncio.sleep(rng.random() * 0.01)
            _reset(writer.transport, s.linger)
            await r
        elif s.end == "server_reset":
            await asyncio.gather(read(), write(s.total))
            writer.close()
            try:
                await writer.wait_closed()
            except RESETS:
                pass
        else:   # client_early_close: close with echo possibly unread
            # (reading on until the last byte is written: an echo server
            # stops reading while its echo is not read)
            stop = random.Random(s.write_seed + 2).randint(0, s.total)
            written = False

            async def read_some():
                try:
                    while not (written and v.count >= stop):
                        n = 65536 if not written else min(65536, stop - v.count)
                        data = await reader.read(n)
                        if not data:
                            result["read"] = "eof"
                            return
                        v.feed(data)
                    result["read"] = "stopped"
                except Mismatch as exc:
                    ctx.fail(f"client: {exc} (id={conn_id} end={s.end} "
                             f"{s.family}/{s.server_kind})")
                    writer.transport.abort()
                except RESETS as exc:
                    result["error"] = exc
                    result["read"] = "error"
            r = asyncio.ensure_future(read_some())
            await write(s.total)
            # all of it sent, not only below the high-water mark: close()
            # would wait for the rest, which the server (not reading while
            # its echo waits) may never take
            writer.transport.set_write_buffer_limits(high=0)
            try:
                await writer.drain()
            except RESETS as exc:
                result["error"] = exc
            written = True
            if v.count >= stop and not r.done():
                r.cancel()
                result["read"] = "stopped"
            try:
                await r
            except asyncio.CancelledError:
                if asyncio.current_task().cancelling():
                    raise
            writer.close()
            try:
                await writer.wait_closed()
            except RESETS:
                pass
    except Mismatch as exc:
        ctx.fail(f"client: {exc} (id={conn_id} end={s.end} {s.family}/{s.server_kind})")
        writer.transport.abort()
        return s, v, result
    return s, v, result


async def run_client(ctx, addrs, conn_id):
    s = Script(ctx.seed, conn_id)
    ctx.pending[conn_id] = s
    try:
        if s.end == "half_close":
            # write_eof after the last byte, then read to EOF
            return await _half_close_client(ctx, addrs, s)
        return await client(ctx, addrs, conn_id)
    finally:
        del ctx.pending[conn_id]
        ctx.live.pop(conn_id, None)


async def _half_close_client(ctx, addrs, s):
    v, reader, writer, result = await _connect(ctx, addrs, s)

    async def read():
        result["read"] = await _read_into(reader, v)

    async def write():
        result["sent"] = await _write_script(writer, s, s.total)
        writer.write_eof()

    try:
        await asyncio.gather(read(), write())
    except Mismatch as exc:
        ctx.fail(f"client: {exc} (id={s.conn_id} end={s.end} {s.family}/{s.server_kind})")
        writer.transport.abort()
        return s, v, result
    except RESETS as exc:
        result["error"] = exc
    writer.close()
    await writer.wait_closed()
    return s, v, result


def check_connection(ctx, s, v, result):
    rec = ctx.records.get(s.conn_id)
    desc = (f"id={s.conn_id} end={s.end} {s.family}/{s.server_kind} total={s.total} "
            f"cut={s.cut} client read={v.count} ({result['read']}, {result['error']!r}) "
            f"server read={rec.count if rec else None} "
            f"({'eof' if rec and rec.eof else ''} {rec.error if rec else None!r})")
    ctx.stats["bytes_checked"] += v.count + (rec.count if rec else 0)
    if result["error"] is not None or (rec is not None and rec.error is not None):
        ctx.stats["resets"] += 1
    if s.end in STRICT:
        ctx.stats["strict"] += 1
        ok = (rec is not None and rec.count == s.total and rec.error is None
              and v.count == s.total and result["error"] is None)
        if s.end in ("close", "half_close"):
            ok = ok and rec.eof
        if s.end in ("half_close", "server_close"):
            ok = ok and result["read"] == "eof"
        if not ok:
            ctx.fail("lost or unexpected: " + desc)
    else:
        # a prefix on both sides (the verifiers checked every byte)
        if rec is not None and v.count > rec.count:
            ctx.fail("client received more than the server echoed: " + desc)
    if rec is not None:
        ctx.stats["frames"] += len(s.sizes)


# ---- UDP -------------------------------------------------------------------

class UdpEcho(asyncio.DatagramProtocol):
    def __init__(self, ctx):
        self.ctx = ctx

    def connection_made(self, t):
        self.t = t

    def datagram_received(self, data, addr):
        if len(data) < 40 or hashlib.sha256(data[40:]).digest() != data[8:40]:
            self.ctx.fail(f"UDP server: bad datagram of {len(data)} bytes")
            return
        self.t.sendto(data, addr)

    def error_received(self, exc):
        self.ctx.fail(f"UDP server: {exc!r}")


class UdpClient(asyncio.DatagramProtocol):
    def __init__(self):
        self.q = asyncio.Queue()

    def datagram_received(self, data, addr):
        self.q.put_nowait(data)

    def error_received(self, exc):
        self.q.put_nowait(exc)


async def udp_client(ctx, addr, rng, cid, n):
    loop = ctx.loop
    t, p = await loop.create_datagram_endpoint(UdpClient, remote_addr=addr)
    sent = {}
    try:
        for seq in range(n):
            size = rng.randint(0, 1400) if rng.random() < 0.7 else rng.randint(0, 60000)
            payload = rng.randbytes(size)
            d = struct.pack(">II", cid, seq) + hashlib.sha256(payload).digest() + payload
            sent[seq] = d
            for attempt in range(40):
                t.sendto(d)
                deadline = loop.time() + 0.5 + attempt * 0.25
                got = False
                while not got:
                    try:
                        r = await asyncio.wait_for(p.q.get(), max(0.01, deadline - loop.time()))
                    except asyncio.TimeoutError:
                        break
                    if isinstance(r, Exception):
                        ctx.fail(f"UDP client: {r!r}")
                        continue
                    c2, s2 = struct.unpack(">II", r[:8])
                    if c2 != cid or sent.get(s2) != r:
                        ctx.fail(f"UDP client {cid}: wrong echo for seq {s2}")
                        continue
                    ctx.stats["udp_datagrams"] += 1
                    got = s2 == seq
                if got:
                    break
                ctx.stats["udp_resent"] += 1
            else:
                ctx.fail(f"UDP client {cid}: no echo for seq {seq} after 40 sends")
    finally:
        t.close()


async def udp_part(ctx, rng, clients, per_client):
    loop = ctx.loop
    t, _ = await loop.create_datagram_endpoint(lambda: UdpEcho(ctx),
                                               local_addr=("127.0.0.1", 0))
    try:
        addr = t.get_extra_info("sockname")
        await asyncio.gather(*(udp_client(ctx, addr, random.Random(rng.random()), i, per_client)
                               for i in range(clients)))
    finally:
        t.close()


# ---- pipes -----------------------------------------------------------------

class PipeWriteProtocol(asyncio.streams.FlowControlMixin):
    """drain() and wait_closed() for a StreamWriter on a write pipe."""

    def __init__(self):
        super().__init__()
        self.closed = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc):
        super().connection_lost(exc)
        if not self.closed.done():
            self.closed.set_result(None)

    def _get_close_waiter(self, stream):
        return self.closed


async def pipe_part(ctx, rng):
    loop = ctx.loop
    r, w = os.pipe()
    rf, wf = os.fdopen(r, "rb", 0), os.fdopen(w, "wb", 0)
    reader = asyncio.StreamReader()
    rt, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), rf)
    wt, wp = await loop.connect_write_pipe(PipeWriteProtocol, wf)
    writer = asyncio.StreamWriter(wt, wp, None, loop)
    data = rng.randbytes(rng.randint(0, 4 << 20))

    async def write():
        off = 0
        while off < len(data):
            n = rng.randint(1, 256 * 1024)
            writer.write(data[off:off + n])
            off += n
            await writer.drain()
        writer.close()
        await writer.wait_closed()

    got, _ = await asyncio.gather(reader.read(), write())
    rt.close()
    if got != data:
        ctx.fail(f"pipe: {len(got)} bytes read, {len(data)} written, "
                 f"{'differ' if got != data[:len(got)] else 'a prefix'}")
    ctx.stats["pipe_bytes"] += len(got)


# ---- subprocesses ----------------------------------------------------------

async def subprocess_part(ctx, rng):
    what = rng.choice(["cat", "cat", "true", "false"])
    if what == "cat":
        data = rng.randbytes(rng.randint(0, 1 << 20))
        p = await asyncio.create_subprocess_exec(
            "cat", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        out, _ = await p.communicate(data)
        if out != data or p.returncode != 0:
            ctx.fail(f"cat: {len(out)} bytes back of {len(data)}, exit {p.returncode}")
    else:
        p = await asyncio.create_subprocess_exec(what)
        code = await p.wait()
        if code != (0 if what == "true" else 1):
            ctx.fail(f"{what}: exit code {code}")
    ctx.stats["subprocesses"] += 1


# ---- rounds and measurements -----------------------------------------------

try:
    import ctypes
    _libc = ctypes.CDLL(None)
    _libc.malloc_trim
except (OSError, AttributeError):     # not glibc
    _libc = None
TRIM = _libc is not None and os.environ.get("SOAK_MALLOC_TRIM", "1") != "0"


def count_fds():
    return len(os.listdir("/proc/self/fd"))


def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def measure(loop):
    # the loop idle: a few iterations for closes still completing
    for _ in range(5):
        await asyncio.sleep(0)
    await asyncio.sleep(0.05)
    gc.collect()
    untrimmed = rss_kib()
    if TRIM:
        _libc.malloc_trim(0)
    info = loop._ring_info() if hasattr(loop, "_ring_info") else {}
    return dict(
        fds=count_fds(),
        slots=info.get("fixed_files_in_use"),
        buffers_provided=info.get("recv_buffers_provided"),
        buffers_available=info.get("recv_buffers_available"),
        buffer_size=info.get("recv_buffer_size"),
        rss_kib=rss_kib(),
        rss_untrimmed_kib=untrimmed,
    )


async def one_round(ctx, round_no, connections, sdir):
    rng = random.Random(f"{ctx.seed}:round:{round_no}")
    ctx.records.clear()
    ctx.anonymous.clear()
    ctx.accepted = 0
    ctx.ids = {round_no * 1_000_000 + i for i in range(connections)}
    if os.environ.get("SOAK_ONLY"):     # replay some connections of a seed
        ctx.ids = {int(i) for i in os.environ["SOAK_ONLY"].split(",")}
    servers, addrs = await start_servers(ctx, sdir, round_no)
    n_small = max(2, connections // 100)
    try:
        clients = [run_client(ctx, addrs, cid) for cid in sorted(ctx.ids)]
        others = ([udp_part(ctx, rng, n_small, 20)]
                  + [pipe_part(ctx, random.Random(rng.random())) for _ in range(n_small)]
                  + [subprocess_part(ctx, random.Random(rng.random())) for _ in range(n_small)])
        work = asyncio.gather(*clients, *others, return_exceptions=True)
        try:
            results = await asyncio.wait_for(asyncio.shield(work), ROUND_TIMEOUT)
            await asyncio.wait_for(ctx.idle.wait(), ROUND_TIMEOUT)
        except asyncio.TimeoutError:
            ctx.fail(f"round {round_no} hangs after {ROUND_TIMEOUT} s: "
                     f"{len(ctx.pending)} clients, {len(ctx.sides)} server connections")
            for cid, s in list(ctx.pending.items())[:20]:
                ctx.fail(f"  client id={cid} end={s.end} {s.family}/{s.server_kind} "
                         f"total={s.total} cut={s.cut} linger={s.linger}")
                if cid in ctx.live:
                    v, reader, writer = ctx.live[cid]
                    t = writer.transport
                    ctx.fail(f"    received {v.count}, reader buffer {len(reader._buffer)} "
                             f"eof={reader.at_eof()} exc={reader.exception()!r}, transport "
                             f"reading={t.is_reading()} closing={t.is_closing()} "
                             f"write buffer={t.get_write_buffer_size()}: {t!r}")
            for side in list(ctx.sides)[:20]:
                t = side.transport
                ctx.fail(f"  server {side._desc()} eof={side.eof} transport {t!r} "
                         f"reading={t.is_reading()} write buffer={t.get_write_buffer_size()}")
            work.cancel()
            try:
                await work
            except asyncio.CancelledError:
                pass
            raise
    finally:
        for srv in servers:
            srv.close()
        for srv in servers:
            await srv.wait_closed()
    connected = 0
    for r in results:
        if isinstance(r, BaseException):
            ctx.fail(f"task failed: {r!r}")
        elif isinstance(r, tuple):
            connected += 1
            check_connection(ctx, *r)
    if ctx.accepted != connected:
        ctx.fail(f"round {round_no}: {ctx.accepted} accepted, {connected} connected")
    for side in ctx.anonymous:
        if side.count >= PREAMBLE:
            ctx.fail(f"anonymous server record with {side.count} bytes")
    ctx.records.clear()
    ctx.anonymous.clear()


def raise_nofile(connections):
    need = 2 * connections + 512
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        new = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


async def soak(connections=1000, rounds=None, minutes=None, seed=None, log=print):
    """Run the soak; returns a report dict with 'failures' (empty: passed)."""
    loop = asyncio.get_running_loop()
    if seed is None:
        seed = random.randrange(1 << 32)
    log(f"soak: seed {seed}, {connections} connections per round, loop "
        f"{type(loop).__module__}.{type(loop).__name__}")
    ctx = Ctx(seed, loop)
    errors = []

    def handler(loop, context):
        errors.append(context)
    loop.set_exception_handler(handler)
    sdir = tempfile.mkdtemp(prefix="soak", dir="/tmp")
    t0 = time.monotonic()
    start = await measure(loop)
    warm = None
    n = 0
    try:
        while True:
            n += 1
            r0 = time.monotonic()
            try:
                await one_round(ctx, n, connections, sdir)
            except asyncio.TimeoutError:
                break
            m = await measure(loop)
            if n == 1:
                warm = m
            log(f"round {n}: {time.monotonic() - r0:.1f} s, fds {m['fds']}, slots {m['slots']}, "
                f"buffers {m['buffers_available']}/{m['buffers_provided']}, "
                f"RSS {m['rss_kib'] / 1024:.1f} MiB, failures {len(ctx.failures)}")
            if ctx.failures:
                break
            if rounds is not None and n >= rounds:
                break
            if minutes is not None and time.monotonic() - t0 >= minutes * 60:
                break
    finally:
        shutil.rmtree(sdir, ignore_errors=True)
        loop.set_exception_handler(None)
    end = await measure(loop)
    for c in errors:
        ctx.fail(f"exception handler: {c.get('message')} {c.get('exception')!r}")
    checks = []

    def check(name, ok, detail):
        checks.append((name, ok, detail))
        if not ok:
            ctx.fail(f"{name}: {detail}")
    check("open fds back to start", end["fds"] == start["fds"], f"{start['fds']} -> {end['fds']}")
    if start["slots"] is not None:
        check("fixed-file slots back to start", end["slots"] == start["slots"],
              f"{start['slots']} -> {end['slots']}")
    if end["buffers_provided"]:
        if end["buffers_available"] is not None:
            check("receive buffers all back in the ring",
                  end["buffers_available"] == end["buffers_provided"],
                  f"{end['buffers_available']} available of {end['buffers_provided']} provided")
    if warm is None:            # the first round failed
        warm = end
    # The receive-buffer pool doubles when a recv finds it empty and never
    # shrinks (up to 2,048 x 64 KiB): a later round with a bigger burst than
    # the warm-up's grows it again, by design.  Its growth since the warm-up
    # is set aside (and shown); every provided buffer must be back anyway.
    grown_kib = ((end["buffers_provided"] or 0) - (warm["buffers_provided"] or 0)) \
        * (end["buffer_size"] or 0) // 1024
    rss_ok = end["rss_kib"] - grown_kib <= warm["rss_kib"] * 1.05
    check("RSS within 5% of the warm-up round's", rss_ok,
          f"{warm['rss_kib'] / 1024:.1f} -> {end['rss_kib'] / 1024:.1f} MiB "
          + (f"less {grown_kib / 1024:.1f} MiB of receive buffers provided since "
             if grown_kib else "")
          + f"({((end['rss_kib'] - grown_kib) / warm['rss_kib'] - 1) * 100:+.1f}%)")
    return dict(seed=seed, rounds=n, seconds=time.monotonic() - t0, stats=dict(ctx.stats),
                start=start, warm=warm, end=end, checks=checks, failures=list(ctx.failures))


def format_report(rep):
    st = rep["stats"]
    lines = [
        f"seed {rep['seed']}: {rep['rounds']} rounds in {rep['seconds']:.0f} s",
        "",
        f"{'connections done':<34}{st['connections']:>16,}",
        f"{'  of which lossless (strict) ends':<34}{st['strict']:>16,}",
        f"{'  ended by a reset':<34}{st['resets']:>16,}",
        f"{'frames (1 B - 1 MiB)':<34}{st['frames']:>16,}",
        f"{'stream bytes checked':<34}{st['bytes_checked']:>16,}",
        f"{'UDP datagrams echoed':<34}{st['udp_datagrams']:>16,}",
        f"{'  resent after a timeout':<34}{st['udp_resent']:>16,}",
        f"{'pipe bytes checked':<34}{st['pipe_bytes']:>16,}",
        f"{'subprocesses':<34}{st['subprocesses']:>16,}",
        "",
        f"{'':<28}{'start':>10}{'warm-up':>10}{'end':>10}",
    ]

    def row(name, key, fmt=str):
        vals = [rep[k][key] for k in ("start", "warm", "end")]
        lines.append(f"{name:<28}" + "".join(f"{fmt(v) if v is not None else '-':>10}" for v in vals))
    row("open fds", "fds")
    row("fixed-file slots in use", "slots")
    row("recv buffers provided", "buffers_provided")
    row("recv buffers in the ring", "buffers_available")
    row("RSS (MiB)", "rss_kib", lambda v: f"{v / 1024:.1f}")
    row("  before malloc_trim (MiB)", "rss_untrimmed_kib", lambda v: f"{v / 1024:.1f}")
    lines.append("")
    for name, ok, detail in rep["checks"]:
        lines.append(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")
    if rep["failures"]:
        lines.append("")
        lines.append(f"{len(rep['failures'])} failures:")
        lines += ["  " + f for f in rep["failures"][:50]]
    lines.append("")
    lines.append("PASSED" if not rep["failures"] else "FAILED")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float)
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--connections", type=int, default=1000)
    ap.add_argument("--loop", choices=["aioring", "asyncio"], default="aioring")
    ap.add_argument("--seed", type=int)
    a = ap.parse_args(argv)
    if a.minutes is None and a.rounds is None:
        a.rounds = 3
    raise_nofile(a.connections)
    if a.loop == "aioring":
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        import aioring
        factory = aioring.new_event_loop
    else:
        factory = asyncio.SelectorEventLoop
    with asyncio.Runner(loop_factory=factory) as runner:
        rep = runner.run(soak(a.connections, a.rounds, a.minutes, a.seed,
                              log=lambda s: print(s, flush=True)))
    print(format_report(rep))
    return 0 if not rep["failures"] else 1


if __name__ == "__main__":
    sys.exit(main())
