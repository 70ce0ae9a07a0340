"""redis-py's asyncio client against a real Redis server, on the stock loop
and on aioring.

The server comes from tests/integration/servers.py (AIORING_TEST_REDIS_URL;
AIORING_TEST_REDIS_TLS_URL and AIORING_TEST_CA for its TLS port,
AIORING_TEST_REDIS_SOCKET for its Unix socket).
Every test here runs twice ([asyncio], [aioring]); each uses its own key
prefix (and channel names), so runs never see each other's keys.
"""
import asyncio
import hashlib
import os
import ssl
import time
import uuid

import pytest

redis_asyncio = pytest.importorskip("redis.asyncio")
import redis.exceptions  # noqa: E402


def servers_py_variable(name):
    """Another of servers.py's exports: present whenever the URL is."""
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"AIORING_TEST_REDIS_URL is set but {name} (from "
                    f"servers.py) is not")
    return value


def unique_prefix():
    loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
    return f"aioring-test:{loop}:{uuid.uuid4().hex[:10]}:"


@pytest.fixture
async def r(redis_url):
    """A client, and the prefix its test's keys take; keys removed after."""
    client = redis_asyncio.from_url(redis_url)
    prefix = unique_prefix()
    client.test_prefix = prefix
    try:
        yield client
    finally:
        keys = [k async for k in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def test_commands(r):
    p = r.test_prefix
    assert await r.ping() is True
    assert await r.set(p + "a", "hello") is True
    assert await r.get(p + "a") == b"hello"
    assert await r.get(p + "missing") is None
    assert await r.incr(p + "n") == 1
    assert await r.incrby(p + "n", 41) == 42
    assert await r.decr(p + "n") == 41
    assert await r.mset({p + "x": 1, p + "y": "two", p + "z": b"\x00\xff"}) is True
    assert await r.mget(p + "x", p + "y", p + "z", p + "missing") == [b"1", b"two", b"\x00\xff", None]
    assert await r.hset(p + "h", mapping={"f1": "v1", "f2": "v2"}) == 2
    assert await r.hgetall(p + "h") == {b"f1": b"v1", b"f2": b"v2"}
    assert await r.rpush(p + "l", *range(10)) == 10
    assert await r.lrange(p + "l", 0, -1) == [str(i).encode() for i in range(10)]
    assert await r.sadd(p + "s", "a", "b", "c", "a") == 3
    assert await r.smembers(p + "s") == {b"a", b"b", b"c"}
    assert await r.set(p + "ttl", "v", ex=100) is True
    assert 0 < await r.ttl(p + "ttl") <= 100
    assert await r.delete(p + "a", p + "missing") == 1
    assert await r.exists(p + "a") == 0
    # a server-side error is redis-py's exception, and the connection goes on
    with pytest.raises(redis.exceptions.ResponseError, match="not an integer"):
        await r.incr(p + "y")
    with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
        await r.lpush(p + "h", "x")
    assert await r.get(p + "y") == b"two"


async def test_decoded_responses(redis_url):
    async with redis_asyncio.from_url(redis_url, decode_responses=True) as client:
        key = unique_prefix() + "text"
        try:
            await client.set(key, "caf\u00e9 \u4e2d\u6587 \U0001F600")
            assert await client.get(key) == "caf\u00e9 \u4e2d\u6587 \U0001F600"
            assert await client.strlen(key) == len("caf\u00e9 \u4e2d\u6587 \U0001F600".encode())
        finally:
            await client.delete(key)


async def test_large_values(r):
    p = r.test_prefix
    big = os.urandom(10 * 1024 * 1024)
    assert await r.set(p + "big", big) is True
    assert await r.strlen(p + "big") == len(big)
    got = await r.get(p + "big")
    assert len(got) == len(big) and hashlib.sha256(got).digest() == hashlib.sha256(big).digest()
    # several large values written and read at once, on several connections
    values = {p + f"v{i}": os.urandom(1024 * 1024 + i) for i in range(8)}
    await asyncio.gather(*(r.set(k, v) for k, v in values.items()))
    got = await asyncio.gather(*(r.get(k) for k in values))
    assert got == list(values.values())
    assert await r.mget(*values) == list(values.values())
    # APPEND grows a value on the server: read back what the server built
    for i in range(20):
        await r.append(p + "grown", bytes([i]) * 100_000)
    assert await r.get(p + "grown") == b"".join(bytes([i]) * 100_000 for i in range(20))


async def test_tls(redis_url):
    url = servers_py_variable("AIORING_TEST_REDIS_TLS_URL")
    ca = servers_py_variable("AIORING_TEST_CA")
    prefix = unique_prefix()
    async with redis_asyncio.from_url(url, ssl_ca_certs=ca, ssl_check_hostname=True) as client:
        try:
            info = await client.client_info()
            assert int(info["laddr"].rsplit(":", 1)[1]) == int(url.rsplit(":", 1)[1].split("/")[0])
            big = os.urandom(10 * 1024 * 1024)
            await client.set(prefix + "big", big)
            assert await client.get(prefix + "big") == big
            async with client.pipeline(transaction=True) as pipe:
                for i in range(300):
                    pipe.incrby(prefix + "n", i)
                assert (await pipe.execute())[-1] == 299 * 300 // 2
            # concurrent commands: one TLS connection each
            values = await asyncio.gather(*(client.echo(f"e{i}") for i in range(10)))
            assert values == [f"e{i}".encode() for i in range(10)]
        finally:
            await client.delete(prefix + "big", prefix + "n")
    # a client that does not trust the certificate is refused
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    bad = redis_asyncio.from_url(url, ssl_cert_reqs="required", retry=Retry(NoBackoff(), 0))
    try:
        with pytest.raises(redis.exceptions.ConnectionError) as e:
            await bad.ping()
        assert isinstance(e.value.__cause__ or e.value.__context__, ssl.SSLCertVerificationError) \
            or "CERTIFICATE_VERIFY_FAILED" in str(e.value)
    finally:
        await bad.aclose()


async def test_unix_socket(redis_url):
    path = servers_py_variable("AIORING_TEST_REDIS_SOCKET")
    prefix = unique_prefix()
    async with redis_asyncio.Redis(unix_socket_path=path) as client:
        try:
            info = await client.client_info()
            assert "U" in info["flags"] and info["laddr"].startswith(path)
            big = os.urandom(4 * 1024 * 1024)
            await client.set(prefix + "big", big)
            assert await client.get(prefix + "big") == big
            async with client.pipeline(transaction=False) as pipe:
                for i in range(200):
                    pipe.rpush(prefix + "l", i)
                assert (await pipe.execute())[-1] == 200
        finally:
            await client.delete(prefix + "big", prefix + "l")


async def test_pipeline_transaction(r):
    p = r.test_prefix
    async with r.pipeline(transaction=True) as pipe:
        for i in range(300):
            pipe.set(p + f"k{i}", i)
            pipe.incrby(p + "total", i)
        pipe.get(p + "total")
        pipe.lpush(p + "list", *range(50))
        pipe.llen(p + "list")
        results = await pipe.execute()
    assert results[:600] == [v for i in range(300) for v in (True, i * (i + 1) // 2)]
    assert results[600:] == [str(299 * 300 // 2).encode(), 50, 50]
    assert await r.mget(*(p + f"k{i}" for i in range(300))) == [str(i).encode() for i in range(300)]
    # a command error inside MULTI: the others still ran, the error is returned
    async with r.pipeline(transaction=True) as pipe:
        pipe.set(p + "str", "abc").incr(p + "str").set(p + "after", 1)
        results = await pipe.execute(raise_on_error=False)
    assert results[0] is True and results[2] is True
    assert isinstance(results[1], redis.exceptions.ResponseError)


async def test_pipeline_no_transaction(r):
    p = r.test_prefix
    pipe = r.pipeline(transaction=False)
    for i in range(500):
        pipe.rpush(p + "q", f"item-{i}")
    for i in range(0, 500, 100):
        pipe.lindex(p + "q", i)
    pipe.llen(p + "q")
    results = await pipe.execute()
    assert results[:500] == list(range(1, 501))
    assert results[500:505] == [f"item-{i}".encode() for i in range(0, 500, 100)]
    assert results[505] == 500
    # pipelines of several tasks at once
    async def batch(n):
        async with r.pipeline(transaction=False) as pipe:
            for i in range(200):
                pipe.incrby(p + f"batch{n}", i)
            return (await pipe.execute())[-1]
    assert await asyncio.gather(*(batch(n) for n in range(10))) == [199 * 200 // 2] * 10


async def test_watch_conflict(r, redis_url):
    p = r.test_prefix
    await r.set(p + "balance", 100)
    async with redis_asyncio.from_url(redis_url) as other:
        async with r.pipeline(transaction=True) as pipe:
            await pipe.watch(p + "balance")
            balance = int(await pipe.get(p + "balance"))
            await other.set(p + "balance", 5)        # a concurrent change
            pipe.multi()
            pipe.set(p + "balance", balance - 10)
            with pytest.raises(redis.exceptions.WatchError):
                await pipe.execute()
    assert await r.get(p + "balance") == b"5"


async def next_message(pubsub, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
        if message is not None:
            return message
    raise AssertionError("no pub/sub message within %s s" % timeout)


async def test_pubsub(r, redis_url):
    p = r.test_prefix
    channel, other_channel = p + "news", p + "other"
    publisher = redis_asyncio.from_url(redis_url)
    pubsub = r.pubsub()
    try:
        await pubsub.subscribe(channel, other_channel)
        await pubsub.psubscribe(p + "events.*")
        # the subscription confirmations
        confirmations = []
        while len(confirmations) < 3:
            m = await pubsub.get_message(timeout=5.0)
            assert m is not None
            confirmations.append((m["type"], m["channel"]))
        assert sorted(confirmations) == sorted([
            ("subscribe", channel.encode()), ("subscribe", other_channel.encode()),
            ("psubscribe", (p + "events.*").encode())])
        assert dict(await publisher.pubsub_numsub(channel)) == {channel.encode(): 1}

        for i in range(100):
            assert await publisher.publish(channel, f"msg {i}") == 1
        got = [await next_message(pubsub) for _ in range(100)]
        assert [(m["type"], m["channel"], m["data"]) for m in got] == [
            ("message", channel.encode(), f"msg {i}".encode()) for i in range(100)]

        assert await publisher.publish(p + "events.login", "alice") == 1
        assert await publisher.publish(p + "events.logout", b"\x00bob") == 1
        m1, m2 = await next_message(pubsub), await next_message(pubsub)
        assert (m1["type"], m1["pattern"], m1["channel"], m1["data"]) == (
            "pmessage", (p + "events.*").encode(), (p + "events.login").encode(), b"alice")
        assert (m2["channel"], m2["data"]) == ((p + "events.logout").encode(), b"\x00bob")

        # a large message
        big = os.urandom(2 * 1024 * 1024)
        await publisher.publish(other_channel, big)
        assert (await next_message(pubsub))["data"] == big

        await pubsub.unsubscribe(channel)
        await pubsub.punsubscribe()
        # wait for the unsubscriptions to be confirmed
        kinds = set()
        while kinds != {"unsubscribe", "punsubscribe"}:
            m = await pubsub.get_message(timeout=5.0)
            assert m is not None
            kinds.add(m["type"])
        assert await publisher.publish(channel, "nobody hears") == 0
        assert await publisher.publish(p + "events.x", "nobody") == 0
        assert await publisher.publish(other_channel, "still here") == 1
        assert (await next_message(pubsub))["data"] == b"still here"
    finally:
        await pubsub.aclose()
        await publisher.aclose()


async def test_pubsub_listen_task(r, redis_url):
    # the listen() iterator in a task of its own, as applications run it
    channel = r.test_prefix + "feed"
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(channel)
    received = []

    async def reader():
        async for message in pubsub.listen():
            if message["type"] == "message":
                received.append(message["data"])
                if message["data"] == b"stop":
                    return

    task = asyncio.ensure_future(reader())
    async with redis_asyncio.from_url(redis_url) as publisher:
        while await publisher.pubsub_numsub(channel) != [(channel.encode(), 1)]:
            await asyncio.sleep(0.01)
        for i in range(50):
            await publisher.publish(channel, str(i))
        await publisher.publish(channel, "stop")
        await asyncio.wait_for(task, 10)
    assert received == [str(i).encode() for i in range(50)] + [b"stop"]
    await pubsub.aclose()


async def test_connection_pool_concurrency(redis_url):
    prefix = unique_prefix()
    name = "aioring-pool-" + uuid.uuid4().hex[:10]
    pool = redis_asyncio.BlockingConnectionPool.from_url(
        redis_url, max_connections=8, timeout=20, client_name=name)
    client = redis_asyncio.Redis(connection_pool=pool)
    try:
        async def work(i):
            await client.set(prefix + f"k{i}", i * i)
            await client.incr(prefix + "counter")
            return int(await client.get(prefix + f"k{i}"))

        results = await asyncio.gather(*(work(i) for i in range(300)))
        assert results == [i * i for i in range(300)]
        assert int(await client.get(prefix + "counter")) == 300
        # the pool made at most its 8 connections, and more than one: the
        # server sees them (they stay open in the pool)
        ours = [c for c in await client.client_list() if c.get("name") == name]
        assert 1 < len(ours) <= 8
    finally:
        keys = [k async for k in client.scan_iter(match=prefix + "*")]
        await client.delete(*keys)
        await client.aclose()
        await pool.disconnect()


async def test_blocking_pop(r, redis_url):
    p = r.test_prefix
    # BLPOP times out on the server: None after about the timeout
    t0 = time.monotonic()
    assert await r.blpop([p + "empty"], timeout=0.5) is None
    assert 0.4 <= time.monotonic() - t0 < 5
    # BLPOP woken by a push from another client
    async with redis_asyncio.from_url(redis_url) as pusher:
        async def push_later():
            await asyncio.sleep(0.2)
            return await pusher.rpush(p + "jobs", "job-1")

        popped, pushed = await asyncio.gather(r.blpop([p + "jobs"], timeout=10), push_later())
        assert popped == ((p + "jobs").encode(), b"job-1") and pushed == 1
        # many waiters, fed one item each
        waiters = [asyncio.ensure_future(r.blpop([p + "many"], timeout=10)) for _ in range(5)]
        await asyncio.sleep(0.2)
        await pusher.rpush(p + "many", *range(5))
        got = await asyncio.gather(*waiters)
        assert sorted(v for _, v in got) == [str(i).encode() for i in range(5)]
    # a BLPOP cancelled by an asyncio timeout: the client is usable after
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(r.blpop([p + "never"], timeout=0), 0.3)
    assert await r.ping() is True
    await r.rpush(p + "later", "x")
    assert await r.blpop([p + "later"], timeout=1) == ((p + "later").encode(), b"x")


async def test_close_releases_connections(redis_url):
    name = "aioring-test-" + uuid.uuid4().hex[:10]
    async with redis_asyncio.from_url(redis_url) as observer:
        async def ours():
            return [c for c in await observer.client_list() if c.get("name") == name]

        client = redis_asyncio.from_url(redis_url, client_name=name)
        await asyncio.gather(*(client.ping() for _ in range(5)))
        assert len(await ours()) >= 1
        await client.aclose()
        # the server sees the connections go
        deadline = time.monotonic() + 10
        while await ours():
            assert time.monotonic() < deadline, "connections still open after aclose()"
            await asyncio.sleep(0.02)
        # the context manager form closes too
        async with redis_asyncio.from_url(redis_url, client_name=name) as client2:
            assert await client2.echo("hi") == b"hi"
            assert len(await ours()) == 1
        deadline = time.monotonic() + 10
        while await ours():
            assert time.monotonic() < deadline, "connection still open after async with"
            await asyncio.sleep(0.02)


async def test_server_closes_connection(r, redis_url):
    # CLIENT KILL from another client: the next command finds the
    # connection closed by the server, the one after reconnects
    p = r.test_prefix
    name = "aioring-kill-" + uuid.uuid4().hex[:10]
    await r.set(p + "k", "v")
    victim = redis_asyncio.from_url(redis_url, client_name=name)
    try:
        assert await victim.get(p + "k") == b"v"
        ids = [c["id"] for c in await r.client_list() if c.get("name") == name]
        assert len(ids) == 1
        assert await r.client_kill_filter(_id=ids[0]) == 1
        with pytest.raises(redis.exceptions.ConnectionError, match="Connection closed by server"):
            await victim.get(p + "k")
        assert await victim.get(p + "k") == b"v"
        new_ids = [c["id"] for c in await r.client_list() if c.get("name") == name]
        assert len(new_ids) == 1 and new_ids != ids
    finally:
        await victim.aclose()
