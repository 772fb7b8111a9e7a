"""A stand-in kernel for tests that need a real process but not a Jupyter kernel.

Usage: toy_kernel.py CONNECTION_FILE [--ignore-term] [--grandchild PIDFILE] [--exit N]
[--notify PORT] [--print-env NAME...]

It reads the connection file (failing loudly if it is missing or not JSON, as a kernel would),
optionally starts a grandchild that sleeps forever (its pid written to PIDFILE), and then
waits for a signal. With --ignore-term it ignores SIGTERM. With --exit N it exits at once with
status N. With --notify PORT it connects to 127.0.0.1:PORT once set up and sends its pid (and
the grandchild's, if any) as a line, so a test can await readiness instead of polling; the
connection closes when the process dies.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys


def main(argv: list[str]) -> int:
    with open(argv[1], encoding="utf-8") as f:
        json.load(f)
    args = argv[2:]
    if "--exit" in args:
        return int(args[args.index("--exit") + 1])
    if "--ignore-term" in args:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    pids = [os.getpid()]
    if "--grandchild" in args:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
        pids.append(child.pid)
    if "--notify" in args:
        port = int(args[args.index("--notify") + 1])
        # Kept open for the life of the process: the test sees EOF when it dies.
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall((" ".join(map(str, pids)) + "\n").encode())
    while True:
        signal.pause()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
