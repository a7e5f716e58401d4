"""Codec and key-wrap micro-benchmark: kmipfast._native against PyKMIP and pyca.

Decodes and encodes real vCenter messages (../shared/conformance/captures/vmware.json)
with kmipfast's native codec and with PyKMIP's own codec, and wraps/unwraps a 32-byte
key with RFC 5649 through kmipfast and through pyca/cryptography, all in one run, and
prints ops/s and the ratio.  Targets (DESIGN §8): decode >= 50x PyKMIP, KWP no slower
than pyca.

    python loadtests/bench_codec.py [--seconds 1.0]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import keywrap
from kmip.core.messages.messages import RequestMessage, ResponseMessage
from kmip.core.utils import BytearrayStream

from kmipfast import _native

CAPTURES = Path(__file__).resolve().parents[1] / ".." / "shared" / "conformance" / "captures"


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``fn``, measured in batches for at least ``seconds``."""
    fn()
    batch, calls, start = 1, 0, time.perf_counter()
    while True:
        for _ in range(batch):
            fn()
        calls += batch
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return calls / elapsed
        batch = min(batch * 2, 100_000)


def pykmip_decoder(cls: type, data: bytes) -> Callable[[], object]:
    def run() -> object:
        msg = cls()
        msg.read(BytearrayStream(data))
        return msg

    return run


def pykmip_encoder(cls: type, data: bytes) -> Callable[[], object]:
    msg = cls()
    msg.read(BytearrayStream(data))

    def run() -> object:
        out = BytearrayStream()
        msg.write(out)
        return out.buffer

    return run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    args = ap.parse_args()
    caps = json.loads((CAPTURES / "vmware.json").read_text())
    messages = [
        ("vCenter Get request", RequestMessage, bytes.fromhex(caps["get"])),
        ("vCenter Create request", RequestMessage, bytes.fromhex(caps["create"])),
        ("Get response", ResponseMessage, bytes.fromhex(caps["get_response"])),
    ]
    rows: list[tuple[str, float, float, str]] = []
    for name, cls, data in messages:
        tree = _native.decode(data)
        if _native.encode(tree) != data:
            print(f"{name}: native round trip differs", file=sys.stderr)
            return 1
        ours = rate(lambda d=data: _native.decode(d), args.seconds)
        ref = rate(pykmip_decoder(cls, data), args.seconds)
        rows.append((f"decode {name} ({len(data)} B)", ours, ref, "PyKMIP"))
        ours = rate(lambda t=tree: _native.encode(t), args.seconds)
        ref = rate(pykmip_encoder(cls, data), args.seconds)
        rows.append((f"encode {name}", ours, ref, "PyKMIP"))

    kek, key = os.urandom(32), os.urandom(32)
    wrapped = keywrap.aes_key_wrap_with_padding(kek, key)
    if bytes(_native.aes_key_unwrap_with_padding(kek, wrapped)) != key:
        print("KWP interop failure", file=sys.stderr)
        return 1
    rows.append(
        (
            "KWP wrap 32-byte key",
            rate(lambda: _native.aes_key_wrap_with_padding(kek, key), args.seconds),
            rate(lambda: keywrap.aes_key_wrap_with_padding(kek, key), args.seconds),
            "pyca",
        )
    )
    rows.append(
        (
            "KWP unwrap 32-byte key",
            rate(lambda: _native.aes_key_unwrap_with_padding(kek, wrapped), args.seconds),
            rate(lambda: keywrap.aes_key_unwrap_with_padding(kek, wrapped), args.seconds),
            "pyca",
        )
    )
    master = _native.MasterKey.generate()
    blob = master.seal(key, b"default/uid")
    sealed = _native.SealedKey(master, blob, b"default/uid")
    leaf = (0x420043, 0x08, sealed)
    rows.append(
        (
            "unwrap-into-response (SealedKey)",
            rate(lambda: _native.encode(leaf), args.seconds),
            rate(lambda: keywrap.aes_key_unwrap_with_padding(kek, wrapped), args.seconds),
            "pyca unwrap",
        )
    )

    print(f"{'workload':42} {'kmipfast ops/s':>15} {'reference ops/s':>16} {'ratio':>8}  reference")
    for name, ours, ref, who in rows:
        print(f"{name:42} {ours:15,.0f} {ref:16,.0f} {ours / ref:7.1f}x  {who}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
