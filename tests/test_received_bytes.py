"""The bytes objects a stream protocol receives.

aioring reuses a received chunk's bytes object for a later chunk once
nothing references it any more (aioring/sparebytes.pxi).  These scenarios
run on the stock loop and on aioring and check what a program could notice
if that went wrong: a chunk it kept, or a view of it, changing under it; a
stale cached hash; a wrong length; a chunk written back and still being
sent when its object is reused.
"""
import asyncio
import hashlib
import os

import aioring
from _stream_helpers import Factory, Recorder, nofile_at_least, open_pair, until, wait


class Keeper(asyncio.Protocol):
    """Keeps every chunk (every other one only through a memoryview of it)
    with its hash and digest as first seen."""

    def __init__(self):
        self.kept = []          # (chunk or view, hash or None, digest)
        self.total = 0
        self.waiters = []

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        digest = hashlib.sha256(data).hexdigest()
        if len(self.kept) % 2:
            self.kept.append((memoryview(data), None, digest))
        else:
            self.kept.append((data, hash(data), digest))
        self.total += len(data)
        for n, fut in self.waiters:
            if self.total >= n and not fut.done():
                fut.set_result(None)

    async def wait_total(self, n):
        if self.total < n:
            fut = asyncio.get_running_loop().create_future()
            self.waiters.append((n, fut))
            await wait(fut, 20)


def sizes():
    # chunk sizes around and above the reuse thresholds (513 B .. 256 KiB)
    return [600, 1024, 513, 2000, 1024, 4096, 700, 100, 65536, 1500] * 20


async def test_kept_chunks_and_views_never_change(sdir):
    pair = await open_pair("tcp4", sdir, client_factory=Keeper)
    try:
        sent = bytearray()
        for n in sizes():
            block = os.urandom(n)
            sent += block
            pair.st.write(block)
            await pair.cp.wait_total(len(sent))
        for obj, h, digest in pair.cp.kept:
            assert hashlib.sha256(obj).hexdigest() == digest
            if h is not None:
                assert hash(obj) == h == hash(bytes(bytearray(obj)))
        assert b"".join(bytes(obj) for obj, _, _ in pair.cp.kept) == sent
    finally:
        await pair.aclose()


class Hasher(asyncio.Protocol):
    """Keeps nothing: checks each chunk's hash and length against a fresh
    copy, so a reused object with a stale cached hash would show."""

    def __init__(self):
        self.bad = []
        self.digest = hashlib.sha256()
        self.total = 0
        self.done = asyncio.get_running_loop().create_future()
        self.expect = None

    def connection_made(self, transport):
        pass

    def data_received(self, data):
        copy = bytes(bytearray(data))
        if hash(data) != hash(copy) or len(data) != len(copy) or data != copy:
            self.bad.append(len(data))
        {data: 1}       # hash used (and cached in the object) as a dict key
        self.digest.update(data)
        self.total += len(data)
        if self.total >= self.expect and not self.done.done():
            self.done.set_result(None)


async def test_chunks_not_kept_have_fresh_hash_and_length(sdir):
    pair = await open_pair("tcp4", sdir, client_factory=Hasher)
    try:
        expected = hashlib.sha256()
        total = 0
        blocks = []
        for n in sizes():
            block = os.urandom(n)
            blocks.append(block)
            expected.update(block)
            total += n
        pair.cp.expect = total
        for block in blocks:
            pair.st.write(block)
            await asyncio.sleep(0)
        await wait(pair.cp.done, 20)
        assert pair.cp.bad == []
        assert pair.cp.digest.hexdigest() == expected.hexdigest()
    finally:
        await pair.aclose()


async def test_echoed_chunks_reach_the_peer_intact(sdir):
    # the server writes each chunk back as it is: the object is reused only
    # after its send completed
    def echo(p, data):
        p.transport.write(data)

    pair = await open_pair("tcp4", sdir, Factory(on_data=echo), client_factory=Recorder)
    try:
        sent = bytearray()
        for n in sizes():
            block = os.urandom(n)
            sent += block
            pair.ct.write(block)
            if len(sent) % 3 == 0:
                await asyncio.sleep(0)
        await pair.cp.wait_data(len(sent), 30)
        assert hashlib.sha256(pair.cp.data).digest() == hashlib.sha256(sent).digest()
        assert hashlib.sha256(pair.sp.data).digest() == hashlib.sha256(sent).digest()
    finally:
        await pair.aclose()


class Holder(asyncio.Protocol):
    """Echoes, or (while `holding`) keeps chunks until release()."""
    holding = True
    all = []

    def connection_made(self, transport):
        self.transport = transport
        self.held = []
        Holder.all.append(self)

    def data_received(self, data):
        if Holder.holding:
            self.held.append(data)
        else:
            self.transport.write(data)

    def release(self):
        for data in self.held:
            self.transport.write(data)
        self.held = []


def test_spares_follow_the_size_received():
    # aioring only (the pool is its own): 200 chunks of 100 B written back
    # at once fill the pool with 100 B spares once their sends complete;
    # then one connection echoes 1 KiB chunks, and its spares must find
    # room (older ones give theirs up), or every 1 KiB chunk would be a new
    # allocation for good.
    nofile_at_least(600)
    Holder.all = []
    Holder.holding = True

    async def main():
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(Holder, "127.0.0.1", 0, backlog=300)
        port = srv.sockets[0].getsockname()[1]
        conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(200)]
        try:
            small = [os.urandom(100) for _ in conns]
            for (r, w), data in zip(conns, small):
                w.write(data)
            await until(lambda: sum(len(p.held) for p in Holder.all) == len(conns))
            for p in Holder.all:
                p.release()
            for (r, w), data in zip(conns, small):
                assert await r.readexactly(100) == data
            full = loop._ring_info()
            Holder.holding = False
            r, w = conns[0]
            for _ in range(20):
                data = os.urandom(1024)
                w.write(data)
                assert await r.readexactly(1024) == data
            return full, loop._ring_info()
        finally:
            for r, w in conns:
                w.close()
            srv.close()

    full, after = aioring.run(main())
    assert full["spare_bytes_kept"] == 128
    assert full["spare_bytes_total"] == 128 * 100
    # (each side's 1 KiB chunks may be kept: the client's too)
    assert after["spare_bytes_kept"] == 128
    assert after["spare_bytes_total"] > 128 * 100
    assert (after["spare_bytes_total"] - 128 * 100) % (1024 - 100) == 0
