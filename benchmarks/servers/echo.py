"""Echo server for the benchmarks, in the three styles asyncio offers:

  proto     Protocol: data_received -> transport.write
  buffered  BufferedProtocol: recv into one preallocated 64 KiB buffer,
            buffer_updated writes the received slice (as bytes)
  streams   asyncio.start_server: read(65536), write, await drain()

    python benchmarks/servers/echo.py --loop uvloop --kind proto --tcp 25000

Each is what a typical user writes, nothing tuned for a particular loop.
"""
import asyncio
import functools

from loops import serve, server_arguments


class EchoProtocol(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


class EchoBufferedProtocol(asyncio.BufferedProtocol):
    def __init__(self):
        self.buffer = memoryview(bytearray(65536))

    def connection_made(self, transport):
        self.transport = transport

    def get_buffer(self, sizehint):
        return self.buffer

    def buffer_updated(self, nbytes):
        # bytes(): the buffer is reused by the next receive
        self.transport.write(bytes(self.buffer[:nbytes]))


async def echo_stream(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


PROTOCOLS = {"proto": EchoProtocol, "buffered": EchoBufferedProtocol}


def opener(kind, port, path):
    loop = asyncio.get_event_loop()
    if kind == "streams":
        if path:
            return functools.partial(asyncio.start_unix_server, echo_stream, path)
        return functools.partial(asyncio.start_server, echo_stream, "127.0.0.1", port)
    protocol = PROTOCOLS[kind]
    if path:
        return functools.partial(loop.create_unix_server, protocol, path)
    return functools.partial(loop.create_server, protocol, "127.0.0.1", port)


def main():
    ap = server_arguments(__doc__.splitlines()[0])
    ap.add_argument("--kind", choices=("proto", "buffered", "streams"), default="proto")
    args = ap.parse_args()

    def open_server():
        return opener(args.kind, args.tcp, args.unix)()

    serve(args.loop, open_server, args.timeout)


if __name__ == "__main__":
    main()
