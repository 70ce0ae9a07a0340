"""Starting the processes of a measurement: servers pinned to one CPU and the
load on another, and making sure none outlives its measurement."""
import os
import selectors
import signal
import subprocess
import time

SERVER_CPU = 0
CLIENT_CPU = 1


def pin_to(cpu):
    """A preexec_fn that pins the child to `cpu`, when this machine has it
    (on a one-CPU machine server and load share it and figures mean less)."""
    allowed = os.sched_getaffinity(0)

    def pin():
        if cpu in allowed:
            os.sched_setaffinity(0, {cpu})
    return pin


class ServerFailed(RuntimeError):
    """The server exited or stayed silent instead of printing READY."""


class Server:
    """A server process, pinned to SERVER_CPU, that prints `READY <pid>` once
    it listens.  Used as a context manager: leaving it stops the server
    (SIGTERM, then SIGKILL), whatever happened inside.

    `hard_kill`: go straight to SIGKILL.  Under valgrind a process blocked in
    a syscall that valgrind does not know may block (io_uring_enter) has its
    signals held until the syscall returns, so SIGTERM can wait minutes."""

    def __init__(self, argv, env=None, ready_timeout=20.0, log_path=None, hard_kill=False):
        self.argv = argv
        self.env = env
        self.ready_timeout = ready_timeout
        self.log_path = log_path or os.devnull
        self.hard_kill = hard_kill
        self.proc = None
        self.pid = None

    def __enter__(self):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.log,
            env=self.env, preexec_fn=pin_to(SERVER_CPU), start_new_session=True)
        try:
            self.pid = self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def _wait_ready(self):
        deadline = time.monotonic() + self.ready_timeout
        buf = b""
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if sel.select(timeout=0.05):
                    chunk = os.read(self.proc.stdout.fileno(), 4096)
                    if not chunk:
                        break
                    buf += chunk
                    for line in buf.splitlines():
                        if line.startswith(b"READY "):
                            return int(line.split()[1])
                elif self.proc.poll() is not None:
                    break
        self.log.flush()
        raise ServerFailed(f"exited or silent without READY: {last_line(self.log_path)}")

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if self.hard_kill else signal.SIGTERM)
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.log.close()
        self.proc = None


def last_line(path):
    try:
        with open(path, "rb") as f:
            lines = f.read().decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else "no output"
    except OSError:
        return "no log"


def run_client(argv, timeout, env=None):
    """Run a load generator pinned to CLIENT_CPU; returns (rc, stdout, stderr).
    Killed after `timeout` seconds."""
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                          timeout=timeout, env=env, preexec_fn=pin_to(CLIENT_CPU))
    return proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
