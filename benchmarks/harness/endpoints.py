"""Where a server listens: a fresh 127.0.0.1 port or a Unix socket path in
the run's temporary directory.  Only loopback and Unix sockets, ever."""
import itertools
import os
import socket

_serial = itertools.count()


def free_tcp_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def new_endpoint(transport, tmp_dir):
    """("tcp", port) or ("unix", path)"""
    if transport == "tcp":
        return ("tcp", free_tcp_port())
    return ("unix", os.path.join(tmp_dir, f"s{next(_serial)}.sock"))


def loadgen_args(endpoint):
    kind, where = endpoint
    return ["--tcp", f"127.0.0.1:{where}"] if kind == "tcp" else ["--unix", where]
