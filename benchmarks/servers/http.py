"""HTTP/1.1 server for the benchmarks: a Protocol on httptools' parser that
answers every request with "Hello, World!".  Keep-alive, and pipelined
requests that arrive in one data_received are answered with one write.

    python benchmarks/servers/http.py --loop aioring --tcp 25080
"""
import asyncio

import httptools

from loops import serve, server_arguments

RESPONSE = (b"HTTP/1.1 200 OK\r\n"
            b"Content-Type: text/plain\r\n"
            b"Content-Length: 13\r\n"
            b"\r\n"
            b"Hello, World!")


class HttpProtocol(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)
        self.responses = []
        self.keep_alive = True

    # httptools calls this once per complete request
    def on_message_complete(self):
        self.responses.append(RESPONSE)
        if not self.parser.should_keep_alive():
            self.keep_alive = False

    def data_received(self, data):
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            self.transport.close()
            return
        if self.responses:
            self.transport.write(b"".join(self.responses))
            self.responses.clear()
        if not self.keep_alive:
            self.transport.close()


def main():
    ap = server_arguments(__doc__.splitlines()[0])
    args = ap.parse_args()

    def open_server():
        loop = asyncio.get_event_loop()
        if args.unix:
            return loop.create_unix_server(HttpProtocol, args.unix)
        return loop.create_server(HttpProtocol, "127.0.0.1", args.tcp)

    serve(args.loop, open_server, args.timeout)


if __name__ == "__main__":
    main()
