"""What is measured: echo workloads (server style x transport x message size
x connections), HTTP workloads (plain and pipelined) and the settings of a
full and of a quick run."""
from dataclasses import dataclass

ECHO_KINDS = ("proto", "buffered", "streams")
TRANSPORTS = ("tcp", "unix")
MESSAGE_SIZES = (100, 1024, 65536)
CONNECTIONS = (10, 100)


def size_label(size):
    return f"{size // 1024} KiB" if size >= 1024 else f"{size} B"


@dataclass(frozen=True)
class EchoWorkload:
    kind: str          # server style: proto, buffered, streams
    transport: str     # tcp or unix
    size: int          # bytes per message
    conns: int         # connections, one message in flight on each

    @property
    def name(self):
        return f"echo {self.kind} {self.transport} {size_label(self.size)} x{self.conns}"

    @property
    def group(self):
        return f"echo {self.kind} {self.transport}"

    @property
    def row(self):
        return f"{size_label(self.size)} x{self.conns}"

    @property
    def floor_key(self):
        """The C floor echoes the same way whatever the Python style: it is
        measured once per transport, size and connection count."""
        return (self.transport, self.size, self.conns)


@dataclass(frozen=True)
class HttpWorkload:
    pipeline: int      # requests per write (1: no pipelining)
    conns: int = 100
    client: str = "wrk"    # or "loadgen" (its --http mode: no pipelining)

    @property
    def name(self):
        name = "http plain" if self.pipeline == 1 else f"http pipelined x{self.pipeline}"
        return name if self.client == "wrk" else f"{name} (C client)"


@dataclass(frozen=True)
class Settings:
    runs: int              # runs per figure (the median is reported)
    echo_warmup: float     # seconds of load before the window
    echo_window: float     # seconds measured
    http_warmup: int       # wrk takes whole seconds
    http_window: int
    micro_n: int
    callgrind_warmup: float
    callgrind_window: float


FULL = Settings(runs=5, echo_warmup=0.2, echo_window=0.5, http_warmup=1, http_window=1,
                micro_n=100_000, callgrind_warmup=0.3, callgrind_window=0.5)
QUICK = Settings(runs=3, echo_warmup=0.1, echo_window=0.25, http_warmup=0, http_window=1,
                 micro_n=10_000, callgrind_warmup=0.3, callgrind_window=0.5)


def echo_workloads(quick):
    if quick:
        return [EchoWorkload("proto", "tcp", 1024, 10), EchoWorkload("proto", "tcp", 100, 100),
                EchoWorkload("proto", "unix", 1024, 10), EchoWorkload("buffered", "tcp", 65536, 10),
                EchoWorkload("streams", "tcp", 1024, 10)]
    return [EchoWorkload(k, t, s, c) for k in ECHO_KINDS for t in TRANSPORTS
            for s in MESSAGE_SIZES for c in CONNECTIONS]


def callgrind_workloads(quick):
    """Every echo workload in a full run; one in a quick run."""
    if quick:
        return [EchoWorkload("proto", "tcp", 1024, 10)]
    return echo_workloads(False)


def http_workloads():
    # wrk costs its one CPU more per plain request than the servers do, so
    # on plain HTTP every loop runs at wrk's speed; the C client (cheaper
    # per request) measures the servers there too
    return [HttpWorkload(1), HttpWorkload(1, client="loadgen"), HttpWorkload(16)]
