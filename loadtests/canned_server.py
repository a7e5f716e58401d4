"""The ceiling: a trivial uvloop TLS server that answers every framed KMIP message
(8-byte TTLV header + body) with one fixed, pre-encoded, successful Get response.

It does no KMIP work at all, so what it reaches on this machine is the most any
Python/uvloop/OpenSSL server could reach with the same certificates and TLS settings;
bench_server.py measures it in the same run as the real servers.

    python loadtests/canned_server.py --cert server.crt --key server.key --ca ca.crt \
        [--listen 127.0.0.1:0]

prints ``canned listening on HOST:PORT`` when ready; SIGTERM/SIGINT stop it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import ssl
import sys
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kmipmsgs import GET_RESPONSE

MAX_MESSAGE = 1 << 20


class Canned(asyncio.Protocol):
    __slots__ = ("_buf", "_transport")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        answers = 0
        while len(buf) >= 8:
            n = 8 + int.from_bytes(buf[4:8], "big")
            if n > MAX_MESSAGE:
                assert self._transport is not None
                self._transport.close()
                return
            if len(buf) < n:
                break
            del buf[:n]
            answers += 1
        if answers and self._transport is not None:
            self._transport.write(GET_RESPONSE * answers)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None


def context(cert: str, key: str, ca: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(cafile=ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    return ctx


async def serve(host: str, port: int, ctx: ssl.SSLContext) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        Canned, host, port, ssl=ctx, backlog=4096, ssl_handshake_timeout=30.0
    )
    bound = server.sockets[0].getsockname()
    print(f"canned listening on {bound[0]}:{bound[1]}", flush=True)
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    async with server:
        await stop


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cert", required=True, help="server certificate chain (PEM)")
    p.add_argument("--key", required=True, help="server private key (PEM)")
    p.add_argument("--ca", required=True, help="CA trusted for client certificates")
    p.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT")
    args = p.parse_args()
    host, _, port = args.listen.rpartition(":")
    uvloop.run(serve(host, int(port), context(args.cert, args.key, args.ca)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
