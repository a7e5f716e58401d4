"""Wall time of ``kmipfast root rotate`` and ``root rotate --reencrypt`` for N keys.

    python loadtests/bench_rotation.py [--keys 100000] [--sessions 2] [--check 2000]

Starts a real server (SoftHSM2 token, SQLite store) on a fresh data dir under a
temporary directory, creates N AES-256 keys in tenant ``default`` through the TTLV
client (batches of 64 Create, 8 messages in flight per session, ``--sessions``
sessions in parallel), then times, each as one CLI process while the server runs:

  rotate      new root key, the master key resealed (no object is touched)
  reencrypt   new root key and master key generation, every object resealed

A sample of ``--check`` keys is read back before and after and must keep its material.
Prints one line per step; never prints key material.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kmipfast.protocol import ttlv
from kmipfast.protocol.enums import Operation
from kmipfast.protocol.tags import Tag
from tests.server.harness import KmipServer, start_server
from tests.server.kmipclient import create_aes_payload, key_material, uid_payload
from tests.server.test_root_keys import pipelined

CHUNK = 4096  # keys per pipelined run on one session


def create(server: KmipServer, n: int, sessions: int) -> list[str]:
    """``n`` keys over ``sessions`` sessions at once; their uids."""
    shares = [n // sessions + (1 if i < n % sessions else 0) for i in range(sessions)]
    out: list[list[str]] = [[] for _ in shares]
    errors: list[str] = []

    def work(i: int) -> None:
        try:
            with server.connect(timeout=120) as conn:
                left = shares[i]
                while left:
                    k = min(CHUNK, left)
                    for r in pipelined(conn, [(Operation.Create, create_aes_payload())] * k):
                        r.expect_success()
                        out[i].append(ttlv.value(r.payload, Tag.UniqueIdentifier))
                    left -= k
        except Exception as exc:  # reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"create failed: {errors[0]}")
    return [uid for part in out for uid in part]


def digests(server: KmipServer, uids: list[str]) -> dict[str, str]:
    with server.connect(timeout=120) as conn:
        results = pipelined(conn, [(Operation.Get, uid_payload(u)) for u in uids])
    out = {}
    for uid, r in zip(uids, results, strict=True):
        r.expect_success()
        material = key_material(r.payload)
        assert material is not None
        out[uid] = hashlib.sha256(material).hexdigest()
    return out


def timed_cli(server: KmipServer, *args: str) -> float:
    started = time.monotonic()
    server.run_cli(*args, timeout=3600)
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--sessions", type=int, default=2)
    parser.add_argument("--check", type=int, default=2000, help="keys read back before/after")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-rotation-") as tmp:
        server = start_server(Path(tmp) / "data")
        try:
            started = time.monotonic()
            uids = create(server, args.keys, args.sessions)
            took = time.monotonic() - started
            print(f"create     keys={len(uids)}  seconds={took:.1f}  ({len(uids) / took:.0f}/s)")
            sample = random.Random(1).sample(uids, min(args.check, len(uids)))
            before = digests(server, sample)

            took = timed_cli(server, "root", "rotate", "--tenant", "default")
            print(f"rotate     keys={len(uids)}  seconds={took:.2f}")
            took = timed_cli(server, "root", "rotate", "--tenant", "default", "--reencrypt")
            print(
                f"reencrypt  keys={len(uids)}  seconds={took:.1f}  ({len(uids) / took:.0f} keys/s)"
            )
            status = server.run_cli("root", "status", "--tenant", "default").stdout
            if "re-encrypting" in status:
                raise SystemExit("re-encryption still pending after `root rotate --reencrypt`")
            if digests(server, sample) != before:
                raise SystemExit("key material changed across rotation")
            print(f"check      {len(sample)} keys read back unchanged")
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
