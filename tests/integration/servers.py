"""Throw-away PostgreSQL and Redis servers for tests/integration.

    eval "$(python tests/integration/servers.py start DIR)"
    python -m pytest tests/integration
    python tests/integration/servers.py stop DIR

`start` makes DIR (if needed) and in it: a self-signed certificate
(openssl command), a PostgreSQL cluster (initdb; 127.0.0.1 on a free port
and a Unix socket; TLS on; superuser `aioring` with a password,
scram-sha-256 over TCP, trust on the Unix socket) and a Redis server
(127.0.0.1 on a free port, TLS on another, a Unix socket; no persistence).
It prints shell `export` lines:

    AIORING_TEST_PG_DSN         postgresql://aioring:...@127.0.0.1:PORT/postgres
    AIORING_TEST_PG_SOCKET_DIR  the directory of PostgreSQL's Unix socket
    AIORING_TEST_REDIS_URL      redis://127.0.0.1:PORT/0
    AIORING_TEST_REDIS_TLS_URL  rediss://127.0.0.1:PORT/0
    AIORING_TEST_REDIS_SOCKET   the path of Redis's Unix socket
    AIORING_TEST_CA             the certificate to verify both servers' TLS
                                with (names in it: localhost, 127.0.0.1)

`stop` stops both servers; it is safe to call twice (or after a failed
start).  Run as root, PostgreSQL runs as the `postgres` user (initdb and
the server refuse root); run as anyone else, both run as that user.
"""
import glob
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time

PG_USER = "aioring"
START_TIMEOUT = 30.0


def _pg_bindir():
    """The directory of initdb / pg_ctl: on PATH, else Debian's newest."""
    found = shutil.which("pg_ctl")
    if found:
        return os.path.dirname(found)
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                      key=lambda p: int(p.split("/")[-3]))
    if not versions:
        sys.exit("servers.py: no PostgreSQL (pg_ctl) found; "
                 "apt-get install postgresql")
    return os.path.dirname(versions[-1])


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_owner():
    """(uid, gid, prefix): who runs PostgreSQL, and the command prefix that
    runs a command as them."""
    if os.geteuid() != 0:
        return os.getuid(), os.getgid(), []
    try:
        pw = pwd.getpwnam("postgres")
    except KeyError:
        sys.exit("servers.py: running as root, but there is no `postgres` "
                 "user to run PostgreSQL as")
    runuser = shutil.which("runuser")
    prefix = ([runuser, "-u", "postgres", "--"] if runuser
              else ["su", "postgres", "-s", "/bin/sh", "-c"])
    return pw.pw_uid, pw.pw_gid, prefix


def _as_pg(prefix, args, **kw):
    if prefix and prefix[0] == "su":
        args = prefix + [" ".join(shlex.quote(a) for a in args)]
    else:
        args = prefix + args
    return subprocess.run(args, **kw)


def _chown(path, uid, gid):
    if os.geteuid() == 0:
        os.chown(path, uid, gid)


def _run(args, **kw):
    result = subprocess.run(args, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)
    if result.returncode != 0:
        sys.exit(f"servers.py: {' '.join(args)} failed:\n{result.stdout}")


def _make_certificate(tls):
    os.makedirs(tls, exist_ok=True)
    _run(["openssl", "req", "-x509", "-newkey", "ec",
          "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
          "-keyout", os.path.join(tls, "server.key"),
          "-out", os.path.join(tls, "server.crt"),
          "-days", "7", "-subj", "/CN=localhost",
          "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
          "-addext", "basicConstraints=critical,CA:TRUE",
          "-addext", "keyUsage=critical,digitalSignature,keyCertSign",
          "-addext", "extendedKeyUsage=serverAuth"])


def _start_pg(d, tls):
    bindir = _pg_bindir()
    uid, gid, prefix = _pg_owner()
    pgdir = os.path.join(d, "pg")
    data = os.path.join(pgdir, "data")
    os.makedirs(pgdir, exist_ok=True)
    _chown(pgdir, uid, gid)
    # the server's copy of the key: owned by its user, mode 0600 (it
    # refuses a key others can read)
    for name in ("server.crt", "server.key"):
        shutil.copy(os.path.join(tls, name), os.path.join(pgdir, name))
        os.chmod(os.path.join(pgdir, name), 0o600)
        _chown(os.path.join(pgdir, name), uid, gid)
    password = secrets.token_hex(12)
    pwfile = os.path.join(pgdir, "pwfile")
    with open(pwfile, "w") as f:
        f.write(password + "\n")
    os.chmod(pwfile, 0o600)
    _chown(pwfile, uid, gid)
    if os.path.exists(os.path.join(data, "postmaster.pid")):
        sys.exit(f"servers.py: a PostgreSQL server already runs in {data}: "
                 "stop it first")
    shutil.rmtree(data, ignore_errors=True)
    r = _as_pg(prefix, [os.path.join(bindir, "initdb"), "-D", data,
                        "-U", PG_USER, f"--pwfile={pwfile}",
                        "--auth-local=trust", "--auth-host=scram-sha-256",
                        "-E", "UTF8", "--no-sync", "--locale=C"],
               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        sys.exit(f"servers.py: initdb failed:\n{r.stdout}")
    os.remove(pwfile)
    port = _free_port()
    with open(os.path.join(data, "postgresql.auto.conf"), "a") as f:
        f.write(f"""
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{pgdir}'
ssl = on
ssl_cert_file = '{pgdir}/server.crt'
ssl_key_file = '{pgdir}/server.key'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
""")
    log = os.path.join(pgdir, "server.log")
    r = _as_pg(prefix, [os.path.join(bindir, "pg_ctl"), "start", "-w",
                        "-t", str(int(START_TIMEOUT)), "-D", data, "-l", log],
               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        tail = open(log).read()[-3000:] if os.path.exists(log) else ""
        sys.exit(f"servers.py: PostgreSQL did not start:\n{r.stdout}\n{tail}")
    return f"postgresql://{PG_USER}:{password}@127.0.0.1:{port}/postgres"


def _redis_ping(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _start_redis(d, tls):
    server = shutil.which("redis-server")
    if not server:
        sys.exit("servers.py: no redis-server found; apt-get install redis-server")
    rdir = os.path.join(d, "redis")
    os.makedirs(rdir, exist_ok=True)
    port, tls_port = _free_port(), _free_port()
    sock = os.path.join(rdir, "redis.sock")
    _run([server, "--port", str(port), "--bind", "127.0.0.1",
          "--unixsocket", sock, "--unixsocketperm", "700",
          "--tls-port", str(tls_port),
          "--tls-cert-file", os.path.join(tls, "server.crt"),
          "--tls-key-file", os.path.join(tls, "server.key"),
          "--tls-auth-clients", "no",
          "--save", "", "--appendonly", "no", "--daemonize", "yes",
          "--dir", rdir, "--pidfile", os.path.join(rdir, "redis.pid"),
          "--logfile", os.path.join(rdir, "redis.log")])
    deadline = time.monotonic() + START_TIMEOUT
    while not _redis_ping(port):
        if time.monotonic() > deadline:
            sys.exit("servers.py: Redis did not answer PING:\n"
                     + open(os.path.join(rdir, "redis.log")).read()[-3000:])
        time.sleep(0.05)
    return (f"redis://127.0.0.1:{port}/0", f"rediss://127.0.0.1:{tls_port}/0",
            sock)


def start(d):
    d = os.path.abspath(d)
    os.makedirs(d, exist_ok=True)
    if os.geteuid() == 0:
        # the postgres user must reach DIR/pg (mktemp -d makes DIR 0700)
        os.chmod(d, 0o755)
    tls = os.path.join(d, "tls")
    _make_certificate(tls)
    try:
        dsn = _start_pg(d, tls)
        redis_url, redis_tls_url, redis_socket = _start_redis(d, tls)
    except BaseException:
        stop(d)
        raise
    for name, value in (("AIORING_TEST_PG_DSN", dsn),
                        ("AIORING_TEST_PG_SOCKET_DIR", os.path.join(d, "pg")),
                        ("AIORING_TEST_REDIS_URL", redis_url),
                        ("AIORING_TEST_REDIS_TLS_URL", redis_tls_url),
                        ("AIORING_TEST_REDIS_SOCKET", redis_socket),
                        ("AIORING_TEST_CA", os.path.join(tls, "server.crt"))):
        print(f"export {name}={shlex.quote(value)}")


def _stop_pg(d):
    data = os.path.join(d, "pg", "data")
    if not os.path.exists(os.path.join(data, "postmaster.pid")):
        return
    _, _, prefix = _pg_owner()
    _as_pg(prefix, [os.path.join(_pg_bindir(), "pg_ctl"), "stop", "-w",
                    "-m", "immediate", "-D", data],
           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop_redis(d):
    pidfile = os.path.join(d, "redis", "redis.pid")
    try:
        pid = int(open(pidfile).read())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        os.remove(pidfile)
    except FileNotFoundError:
        pass


def stop(d):
    d = os.path.abspath(d)
    _stop_redis(d)
    _stop_pg(d)


def main(argv):
    if len(argv) != 3 or argv[1] not in ("start", "stop"):
        sys.exit(f"usage: {argv[0]} start|stop DIR")
    (start if argv[1] == "start" else stop)(argv[2])


if __name__ == "__main__":
    main(sys.argv)
