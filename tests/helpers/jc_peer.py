"""jupyter_client on the other end, in a process of its own (its blocking client and manager
run asyncio loops that a test's own backend must not share).

Usage:
  jc_peer.py client CONNECTION_FILE CODE
      jupyter_client's BlockingKernelClient runs CODE in the kernel of CONNECTION_FILE and
      prints {"status": ..., "stdout": ...} as one JSON line.
  jc_peer.py kernel CONNECTION_FILE
      jupyter_client's KernelManager starts the python3 kernel with
      transport_encryption='required', writing CONNECTION_FILE; prints "ready" once it
      answers, then shuts it down when standard input reaches its end.
"""

from __future__ import annotations

import json
import sys

from jupyter_client import BlockingKernelClient, KernelManager


def client(connection_file: str, code: str) -> int:
    kc = BlockingKernelClient(connection_file=connection_file)
    kc.load_connection_file()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        out: list[str] = []
        reply = kc.execute_interactive(
            code, timeout=60, output_hook=lambda m: out.append(m["content"].get("text", ""))
        )
        print(json.dumps({"status": reply["content"]["status"], "stdout": "".join(out)}))
    finally:
        kc.stop_channels()
    return 0


def kernel(connection_file: str) -> int:
    km = KernelManager(
        kernel_name="python3", transport_encryption="required", connection_file=connection_file
    )
    km.start_kernel()
    try:
        kc = km.client()
        kc.start_channels()
        kc.wait_for_ready(timeout=60)
        kc.stop_channels()
        print("ready", flush=True)
        sys.stdin.read()
    finally:
        km.shutdown_kernel(now=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "client":
        sys.exit(client(sys.argv[2], sys.argv[3]))
    sys.exit(kernel(sys.argv[2]))
