"""asyncpg against a real PostgreSQL server, on the stock loop and on aioring.

The server comes from tests/integration/servers.py (AIORING_TEST_PG_DSN;
AIORING_TEST_CA to verify its TLS with, AIORING_TEST_PG_SOCKET_DIR for its
Unix socket).  Every test here runs twice
([asyncio], [aioring]); each makes its own tables (unique names).
"""
import asyncio
import functools
import hashlib
import io
import os
import ssl
import time
import urllib.parse
import uuid

import pytest

asyncpg = pytest.importorskip("asyncpg")


def servers_py_variable(name):
    """Another of servers.py's exports: present whenever the DSN is."""
    value = os.environ.get(name)
    if not value or not os.path.exists(value):
        pytest.fail(f"AIORING_TEST_PG_DSN is set but {name} (from "
                    f"servers.py) is not, or names nothing")
    return value


@pytest.fixture(scope="session")
def pg_ca(pg_dsn):
    return servers_py_variable("AIORING_TEST_CA")


@pytest.fixture(scope="session")
def pg_socket_dir(pg_dsn):
    return servers_py_variable("AIORING_TEST_PG_SOCKET_DIR")


def unique(prefix):
    """A table (channel) name no other test or loop uses."""
    loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
    return f"{prefix}_{loop}_{uuid.uuid4().hex[:10]}"


async def ssl_in_use(conn):
    return await conn.fetchrow(
        "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")


# -- connecting ---------------------------------------------------------------

async def test_connect_plain(pg_dsn):
    conn = await asyncpg.connect(pg_dsn, ssl=False)
    try:
        assert await conn.fetchval("SELECT 1 + 1") == 2
        assert (await ssl_in_use(conn))["ssl"] is False
        assert conn.get_server_version().major >= 12
        assert await conn.fetchval("SELECT pg_backend_pid()") == conn.get_server_pid()
        # a large result on a plain connection (many 64 KiB reads)
        rows = await conn.fetch("SELECT g, repeat('x', 100) FROM generate_series(1, 50000) g")
        assert [r[0] for r in rows] == list(range(1, 50001))
        assert all(r[1] == "x" * 100 for r in rows)
    finally:
        await conn.close()
    assert conn.is_closed()


async def test_connect_unix_socket(pg_dsn, pg_socket_dir):
    parts = urllib.parse.urlsplit(pg_dsn)
    conn = await asyncpg.connect(host=pg_socket_dir, port=parts.port,
                                 user=parts.username, database="postgres")
    try:
        # no server address: the session is on the Unix socket
        assert await conn.fetchval("SELECT inet_server_addr()") is None
        rows = await conn.fetch("SELECT g FROM generate_series(1, 100000) g")
        assert [r[0] for r in rows] == list(range(1, 100001))
    finally:
        await conn.close()


async def test_connect_tls_verified_context(pg_dsn, pg_ca):
    ctx = ssl.create_default_context(cafile=pg_ca)   # checks the host name too
    conn = await asyncpg.connect(pg_dsn, ssl=ctx)
    try:
        info = await ssl_in_use(conn)
        assert info["ssl"] is True and info["version"].startswith("TLSv1.")
        rows = await conn.fetch("SELECT g, md5(g::text) FROM generate_series(1, 50000) g")
        assert [(r[0], r[1]) for r in rows] == [
            (i, hashlib.md5(str(i).encode()).hexdigest()) for i in range(1, 50001)]
    finally:
        await conn.close()


async def test_connect_tls_sslmode(pg_dsn, pg_ca):
    # ssl='require': TLS without verification
    conn = await asyncpg.connect(pg_dsn, ssl="require")
    try:
        assert (await ssl_in_use(conn))["ssl"] is True
        assert await conn.fetchval("SELECT $1::text", "over tls") == "over tls"
    finally:
        await conn.close()
    # sslmode=verify-full in the DSN, with the server's certificate as root
    dsn = pg_dsn + "?" + urllib.parse.urlencode(
        {"sslmode": "verify-full", "sslrootcert": pg_ca})
    conn = await asyncpg.connect(dsn)
    try:
        assert (await ssl_in_use(conn))["ssl"] is True
    finally:
        await conn.close()


async def test_tls_untrusted_certificate_refused(pg_dsn):
    ctx = ssl.create_default_context()    # the system's CAs: not our server's
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncpg.connect(pg_dsn, ssl=ctx, timeout=10)


async def test_wrong_password(pg_dsn):
    parts = urllib.parse.urlsplit(pg_dsn)
    netloc = f"{parts.username}:wrong-password@{parts.hostname}:{parts.port}"
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(parts._replace(netloc=netloc).geturl(), ssl=False)


# -- statements ---------------------------------------------------------------

async def test_table_roundtrip(pg_dsn):
    table = unique("rt")
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(f"""CREATE TABLE {table} (
            id int PRIMARY KEY, name text, data bytea, score numeric,
            tags text[], doc jsonb)""")
        import decimal
        import json
        rows = [(i, f"name {i} \u00e9\u4e2d", bytes([i % 256]) * (i % 50),
                 decimal.Decimal(i) / 7, [f"t{i}", f"u{i}"], json.dumps({"i": i}))
                for i in range(1000)]
        await conn.executemany(
            f"INSERT INTO {table} VALUES ($1, $2, $3, $4, $5, $6)", rows)
        got = await conn.fetch(f"SELECT * FROM {table} ORDER BY id")
        assert len(got) == 1000
        for want, r in zip(rows, got):
            assert r["id"] == want[0] and r["name"] == want[1] and r["data"] == want[2]
            assert r["score"] == want[3].quantize(r["score"]) or abs(r["score"] - want[3]) < 1e-9
            assert r["tags"] == want[4] and json.loads(r["doc"]) == {"i": want[0]}
        assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 1000
        row = await conn.fetchrow(f"SELECT name FROM {table} WHERE id = $1", 42)
        assert row["name"] == "name 42 \u00e9\u4e2d"
        status = await conn.execute(f"DELETE FROM {table} WHERE id < $1", 100)
        assert status == "DELETE 100"
        assert await conn.fetchval(f"SELECT min(id) FROM {table}") == 100
    finally:
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
        await conn.close()


async def test_transactions(pg_dsn):
    table = unique("tx")
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(f"CREATE TABLE {table} (v int)")
        async with conn.transaction():
            await conn.execute(f"INSERT INTO {table} VALUES (1), (2)")
        with pytest.raises(ZeroDivisionError):
            async with conn.transaction():
                await conn.execute(f"INSERT INTO {table} VALUES (3)")
                assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 3
                1 / 0
        assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 2
        # a nested transaction (savepoint) rolled back, the outer committed
        async with conn.transaction():
            await conn.execute(f"INSERT INTO {table} VALUES (10)")
            with pytest.raises(RuntimeError):
                async with conn.transaction():
                    await conn.execute(f"INSERT INTO {table} VALUES (20)")
                    raise RuntimeError
        assert sorted(r[0] for r in await conn.fetch(f"SELECT v FROM {table}")) == [1, 2, 10]
        # explicit start/rollback, and another connection's view
        other = await asyncpg.connect(pg_dsn)
        try:
            tr = conn.transaction(isolation="serializable")
            await tr.start()
            await conn.execute(f"DELETE FROM {table}")
            assert await other.fetchval(f"SELECT count(*) FROM {table}") == 3
            await tr.rollback()
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 3
        finally:
            await other.close()
    finally:
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
        await conn.close()


async def test_prepared_statements_and_cursor(pg_dsn):
    conn = await asyncpg.connect(pg_dsn)
    try:
        stmt = await conn.prepare("SELECT $1::int * 2 AS doubled, $2::text AS label")
        assert [t.name for t in stmt.get_parameters()] == ["int4", "text"]
        assert [a.name for a in stmt.get_attributes()] == ["doubled", "label"]
        for i in range(200):
            row = await stmt.fetchrow(i, str(i))
            assert (row["doubled"], row["label"]) == (2 * i, str(i))
        series = await conn.prepare("SELECT g FROM generate_series(1, $1::int) g")
        assert [r[0] for r in await series.fetch(1000)] == list(range(1, 1001))
        assert await series.fetchval(5) == 1
        async with conn.transaction():
            seen = [r[0] async for r in series.cursor(20000, prefetch=500)]
            assert seen == list(range(1, 20001))
            cur = await series.cursor(100)
            assert [r[0] for r in await cur.fetch(30)] == list(range(1, 31))
            await cur.forward(20)
            assert (await cur.fetchrow())[0] == 51
    finally:
        await conn.close()


async def test_server_errors_map_to_asyncpg_exceptions(pg_dsn):
    table = unique("err")
    conn = await asyncpg.connect(pg_dsn)
    try:
        with pytest.raises(asyncpg.UndefinedTableError) as e:
            await conn.fetch(f"SELECT * FROM {table}")
        assert e.value.sqlstate == "42P01"
        with pytest.raises(asyncpg.PostgresSyntaxError):
            await conn.execute("SELEC 1")
        with pytest.raises(asyncpg.DivisionByZeroError):
            await conn.fetchval("SELECT 1 / 0")
        await conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY)")
        await conn.execute(f"INSERT INTO {table} VALUES (1)")
        with pytest.raises(asyncpg.UniqueViolationError) as e:
            await conn.execute(f"INSERT INTO {table} VALUES (1)")
        assert e.value.constraint_name == f"{table}_pkey"
        with pytest.raises(asyncpg.RaiseError, match="custom failure"):
            await conn.execute("DO $$ BEGIN RAISE EXCEPTION 'custom failure'; END $$")
        with pytest.raises(asyncpg.InFailedSQLTransactionError):
            async with conn.transaction():
                await conn.execute(f"INSERT INTO {table} VALUES (2)")
                with pytest.raises(asyncpg.DivisionByZeroError):
                    await conn.execute("SELECT 1 / 0")
                await conn.execute("SELECT 1")    # rolls the transaction back
        # the connection is still good
        assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 1
    finally:
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
        await conn.close()


# -- concurrency ---------------------------------------------------------------

async def test_pool_concurrent_queries(pg_dsn):
    async with asyncpg.create_pool(pg_dsn, min_size=2, max_size=10) as pool:
        async def work(i):
            async with pool.acquire() as conn:
                row = await conn.fetchrow(
                    "SELECT $1::int AS i, pg_backend_pid() AS pid, pg_sleep(0.02)", i)
                total = await conn.fetchval(
                    "SELECT sum(g) FROM generate_series(1, $1::int) g", i)
                return row["i"], row["pid"], total

        results = await asyncio.gather(*(work(i) for i in range(1, 51)))
        assert [r[0] for r in results] == list(range(1, 51))
        assert [r[2] for r in results] == [i * (i + 1) // 2 for i in range(1, 51)]
        # the 50 tasks ran on several server connections at once
        assert 2 <= len({r[1] for r in results}) <= 10
        # pool shortcuts
        assert await pool.fetchval("SELECT 40 + 2") == 42
        values = await asyncio.gather(*(pool.fetchval("SELECT $1::int", i) for i in range(100)))
        assert values == list(range(100))
        assert pool.get_size() <= 10


async def test_listen_notify(pg_dsn):
    channel = unique("chan")
    listener = await asyncpg.connect(pg_dsn)
    sender = await asyncpg.connect(pg_dsn)
    received = asyncio.Queue()
    try:
        def on_notify(conn, pid, chan, payload):
            received.put_nowait((pid, chan, payload))

        await listener.add_listener(channel, on_notify)
        for i in range(100):
            await sender.execute("SELECT pg_notify($1, $2)", channel, f"message {i}")
        # one transaction's notifications arrive together, after its commit
        async with sender.transaction():
            await sender.execute(f"NOTIFY {channel}, 'in tx 1'")
            await sender.execute(f"NOTIFY {channel}, 'in tx 2'")
        got = [await asyncio.wait_for(received.get(), 10) for _ in range(102)]
        assert [g[2] for g in got] == [f"message {i}" for i in range(100)] + ["in tx 1", "in tx 2"]
        assert {g[0] for g in got} == {sender.get_server_pid()}
        assert {g[1] for g in got} == {channel}
        await listener.remove_listener(channel, on_notify)
        await sender.execute("SELECT pg_notify($1, 'late')", channel)
        # a round trip on the listener: a notification would have come first
        assert await listener.fetchval("SELECT 1") == 1
        await asyncio.sleep(0.1)
        assert received.empty()
    finally:
        await listener.close()
        await sender.close()


# -- COPY ----------------------------------------------------------------------

COPY_ROWS = 250_000        # ~30 MB of text


@functools.lru_cache(maxsize=None)
def copy_records():
    return [(i, f"{i:08d} " + hashlib.sha256(str(i).encode()).hexdigest() * 2)
            for i in range(COPY_ROWS)]


async def check_copy(conn):
    src, dst = unique("copy_src"), unique("copy_dst")
    records = copy_records()
    payload_bytes = sum(len(r[1]) for r in records)
    assert payload_bytes > 30_000_000
    want_md5 = hashlib.md5("".join(r[1] for r in records).encode()).hexdigest()
    try:
        await conn.execute(f"CREATE TABLE {src} (id int, payload text)")
        await conn.execute(f"CREATE TABLE {dst} (id int, payload text)")
        # client -> server
        status = await conn.copy_records_to_table(src, records=records)
        assert status == f"COPY {COPY_ROWS}"
        row = await conn.fetchrow(
            f"SELECT count(*) AS n, sum(length(payload)) AS size,"
            f" md5(string_agg(payload, '' ORDER BY id)) AS md5 FROM {src}")
        assert (row["n"], row["size"], row["md5"]) == (COPY_ROWS, payload_bytes, want_md5)
        # server -> client (text format)
        out = io.BytesIO()
        status = await conn.copy_from_table(src, output=out, columns=["id", "payload"])
        assert status == f"COPY {COPY_ROWS}"
        text = out.getvalue()
        want_text = "".join(f"{i}\t{p}\n" for i, p in records).encode()
        assert len(text) == len(want_text)
        assert hashlib.sha256(text).hexdigest() == hashlib.sha256(want_text).hexdigest()
        # client -> server from a file-like source, then compared on the server
        status = await conn.copy_to_table(dst, source=io.BytesIO(text))
        assert status == f"COPY {COPY_ROWS}"
        assert await conn.fetchval(
            f"SELECT count(*) FROM {src} s FULL JOIN {dst} d USING (id)"
            f" WHERE s.payload IS DISTINCT FROM d.payload") == 0
        # a query's result copied out in binary, through a callable sink
        chunks = []

        async def sink(chunk):
            chunks.append(bytes(chunk))

        await conn.copy_from_query(f"SELECT payload FROM {src} ORDER BY id",
                                   output=sink, format="binary")
        binary = b"".join(chunks)
        assert len(chunks) > 1 and len(binary) > payload_bytes
        assert binary.startswith(b"PGCOPY\n\xff\r\n\x00")
    finally:
        await conn.execute(f"DROP TABLE IF EXISTS {src}, {dst}")


async def test_large_copy_plain(pg_dsn):
    conn = await asyncpg.connect(pg_dsn, ssl=False)
    try:
        await check_copy(conn)
    finally:
        await conn.close()


async def test_large_copy_tls(pg_dsn, pg_ca):
    conn = await asyncpg.connect(pg_dsn, ssl=ssl.create_default_context(cafile=pg_ca))
    try:
        assert (await ssl_in_use(conn))["ssl"] is True
        await check_copy(conn)
    finally:
        await conn.close()


async def test_copy_out_slow_sink_and_aborted_copy(pg_dsn, pg_ca):
    # asyncpg pauses reading after every chunk until the sink is done with
    # it: a sink that takes its time, over TLS, must still see every byte
    conn = await asyncpg.connect(pg_dsn, ssl=ssl.create_default_context(cafile=pg_ca))
    try:
        query = "SELECT g, md5(g::text) FROM generate_series(1, 100000) g"
        want = "".join(f"{i}\t{hashlib.md5(str(i).encode()).hexdigest()}\n"
                       for i in range(1, 100001)).encode()
        chunks = []

        async def slow_sink(chunk):
            chunks.append(bytes(chunk))
            if len(chunks) % 5 == 0:
                await asyncio.sleep(0.005)

        assert await conn.copy_from_query(query, output=slow_sink) == "COPY 100000"
        assert b"".join(chunks) == want
        # a sink that fails half way: the COPY is cancelled on the server,
        # the error reaches the caller, the connection goes on
        seen = []

        async def failing_sink(chunk):
            seen.append(len(chunk))
            if sum(seen) > 200_000:
                raise ValueError("sink is full")

        with pytest.raises(ValueError, match="sink is full"):
            await conn.copy_from_query(
                "SELECT g, repeat('y', 200) FROM generate_series(1, 1000000) g",
                output=failing_sink)
        assert await conn.fetchval("SELECT 'after aborted copy'") == "after aborted copy"
    finally:
        await conn.close()


# -- cancellation and lost connections ----------------------------------------

async def test_cancel_by_timeout_keeps_connection_usable(pg_dsn):
    conn = await asyncpg.connect(pg_dsn)
    try:
        pid = conn.get_server_pid()
        t0 = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(conn.execute("SELECT pg_sleep(30)"), 0.3)
        assert time.monotonic() - t0 < 10
        assert await conn.fetchval("SELECT 7 * 6") == 42
        assert conn.get_server_pid() == pid
        # asyncio.timeout() and asyncpg's own timeout= do the same
        if hasattr(asyncio, "timeout"):
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):
                    await conn.fetchval("SELECT pg_sleep(30)")
            assert await conn.fetchval("SELECT 'after timeout()'") == "after timeout()"
        with pytest.raises(asyncio.TimeoutError):
            await conn.fetchval("SELECT pg_sleep(30)", timeout=0.3)
        assert await conn.fetchval("SELECT 1") == 1
        # the server did cancel the statement: nothing is still running
        other = await asyncpg.connect(pg_dsn)
        try:
            assert await other.fetchval(
                "SELECT state FROM pg_stat_activity WHERE pid = $1", pid) == "idle"
        finally:
            await other.close()
        assert time.monotonic() - t0 < 20
    finally:
        await conn.close()


async def test_task_cancel_during_query(pg_dsn, pg_ca):
    conn = await asyncpg.connect(pg_dsn, ssl=ssl.create_default_context(cafile=pg_ca))
    try:
        task = asyncio.ensure_future(conn.fetchval("SELECT pg_sleep(30)"))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await conn.fetchval("SELECT 'still usable'") == "still usable"
    finally:
        await conn.close()


async def test_backend_terminated(pg_dsn):
    conn = await asyncpg.connect(pg_dsn)
    admin = await asyncpg.connect(pg_dsn)
    try:
        assert await admin.fetchval(
            "SELECT pg_terminate_backend($1)", conn.get_server_pid()) is True
        # the server's FATAL error and its close reach the protocol unasked
        deadline = time.monotonic() + 10
        while not conn.is_closed():
            assert time.monotonic() < deadline, "the connection loss went unseen"
            await asyncio.sleep(0.02)
        with pytest.raises(asyncpg.InterfaceError, match="connection is closed"):
            await conn.fetchval("SELECT 1")
        assert await admin.fetchval("SELECT 1") == 1
    finally:
        await conn.close()
        await admin.close()
