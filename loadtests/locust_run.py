"""Start a private kmipfast and run the Locust file headless against it.

    python loadtests/locust_run.py [--seconds 60] [--users 8] [--new-session]

Exits with Locust's status: non-zero if any request failed.  ``make locust`` runs it
for 60 s; the test suite runs it for a few seconds so the Locust file keeps working.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_server  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=int, default=60)
    p.add_argument("--users", type=int, default=8)
    p.add_argument("--new-session", action="store_true", help="a TLS session per task")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kmiplocust-") as tmpdir:
        server = bench_server.start_kmipfast(Path(tmpdir))
        try:
            env = {
                **os.environ,
                "KMIP_HOST": server.host,
                "KMIP_PORT": str(server.port),
                "KMIP_SERVER_NAME": "localhost",
                "KMIP_CERT": server.creds.cert,
                "KMIP_KEY": server.creds.key,
                "KMIP_CA": server.creds.ca,
                "KMIP_NEW_SESSION": "1" if args.new_session else "",
            }
            cmd = [
                str(bench_server.BIN / "locust"),
                "-f",
                str(HERE / "locustfile.py"),
                "--headless",
                "-u",
                str(args.users),
                "-r",
                str(args.users),
                "-t",
                f"{args.seconds}s",
                "--only-summary",
                "--stop-timeout",
                "5",
            ]
            return subprocess.run(cmd, env=env, check=False).returncode
        finally:
            bench_server.stop(server)


if __name__ == "__main__":
    sys.exit(main())
