"""TLS material for the TLS and sendfile parity tests (not a test module).

A throw-away CA, a server certificate (SAN: localhost, 127.0.0.1, ::1) and a
client certificate, made once per test session with the `openssl` command
line tool (no Python dependency beyond the standard library), plus the
matching `ssl.SSLContext`s.
"""
import functools
import os
import shutil
import ssl
import subprocess
import tempfile
import atexit

import pytest

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"

SERVER_HOST = "localhost"


def _run(*args, cwd):
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@functools.lru_cache(maxsize=None)
def cert_dir():
    """Make the CA, server and client certificates once; return their
    directory (removed when the interpreter exits)."""
    if not os.path.exists(OPENSSL):
        pytest.skip("no openssl command line tool to make test certificates")
    d = tempfile.mkdtemp(prefix="aioring-tls-")
    atexit.register(shutil.rmtree, d, True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem",
         "-days", "3", "-subj", "/CN=aioring test CA",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    for name, ext in (
            ("server", "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\n"
                       "extendedKeyUsage=serverAuth\n"),
            ("client", "extendedKeyUsage=clientAuth\n")):
        _run("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
             "-subj", f"/CN=aioring test {name}", cwd=d)
        with open(os.path.join(d, f"{name}.ext"), "w") as f:
            f.write("basicConstraints=CA:FALSE\n"
                    "subjectKeyIdentifier=hash\n"
                    "authorityKeyIdentifier=keyid,issuer\n"
                    "keyUsage=critical,digitalSignature,keyEncipherment\n" + ext)
        _run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem",
             "-CAkey", "ca.key", "-CAcreateserial", "-out", f"{name}.pem",
             "-days", "3", "-extfile", f"{name}.ext", cwd=d)
    return d


def path(name):
    return os.path.join(cert_dir(), name)


def server_context(require_client_cert=False):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(path("server.pem"), path("server.key"))
    if require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(path("ca.pem"))
    return ctx


def client_context(with_cert=False):
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=path("ca.pem"))
    if with_cert:
        ctx.load_cert_chain(path("client.pem"), path("client.key"))
    return ctx
