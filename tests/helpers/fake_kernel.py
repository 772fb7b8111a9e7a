"""A minimal Jupyter kernel that can be told to misbehave, for lifecycle tests.

Usage: fake_kernel.py CONNECTION_FILE [options]

It binds the five sockets from the connection file (tcp or ipc), answers kernel_info_request
(shell), publishes busy/idle status on iopub, echoes heartbeats, and on a shutdown_request
(control) replies and exits 0. Options make it misbehave:

--exit N            exit with status N at once, before binding anything
--mute              bind, but never answer anything (a kernel that never becomes ready)
--mute-control      answer on shell, never on control (alive, but deaf to shutdown requests)
--ignore-shutdown   reply to shutdown_request but keep running
--ignore-term       ignore SIGTERM
--crash-after S     exit with status 1, S seconds after its first kernel_info reply (once
                    ready: on a loaded machine, a time from its start could run out first)
--grandchild        start a child process that sleeps for an hour (in the kernel's group)
--slow-start S      wait S seconds before binding its sockets (a kernel slow to get ready)
--stay-busy         publish busy, never idle, around its replies (a kernel forever at work)
--error-replies     answer every shell request but kernel_info_request with an error reply
                    of its type (ename ValueError)
--curve             bind as a CurveZMQ server when the connection file has Curve keys
                    (without it the keys are ignored: a kernel that cannot encrypt)

When the connection file holds ``registration_port`` (the start handshake of JEP 66), it binds
its sockets on ports of its own choosing and reports them in a signed handshake_request to that
port, then waits for the handshake_reply (exiting with status 3 if none comes within 30 s).

A message signed with another key is dropped, as a real kernel drops it (in a port race the
client of another process may reach this kernel).

It imports only the standard library and pyzmq, so it starts fast (the leak test runs it 200
times), and its signing is written apart from kernel_nursery's: a cross-check of the wire
format.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import zmq

Msg = dict[str, Any]


class Session:
    """Just enough of the wire format: sign, parse, build."""

    def __init__(self, key: str) -> None:
        self.key = key.encode()
        self.id = str(uuid.uuid4())

    def _sign(self, parts: list[bytes]) -> bytes:
        mac = hmac.new(self.key, digestmod=hashlib.sha256)
        for part in parts:
            mac.update(part)
        return mac.hexdigest().encode()

    def parse(self, frames: list[bytes]) -> Msg | None:
        """The message, or None (logged) when its signature is not ours."""
        i = frames.index(b"<IDS|MSG>")
        signature, parts = frames[i + 1], frames[i + 2 : i + 6]
        if not hmac.compare_digest(signature, self._sign(parts)):
            print("fake kernel: dropped a message with a bad signature", file=sys.stderr)
            return None
        header, _parent, _metadata, content = (json.loads(p) for p in parts)
        return {"ids": frames[:i], "header": header, "content": content}

    def frames(self, msg_type: str, content: Msg, parent: Msg, ids: list[bytes]) -> list[bytes]:
        header = {
            "msg_id": uuid.uuid4().hex,
            "session": self.id,
            "username": "fake",
            "date": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "msg_type": msg_type,
            "version": "5.4",
        }
        parts = [json.dumps(x).encode() for x in (header, parent["header"], {}, content)]
        return [*ids, b"<IDS|MSG>", self._sign(parts), *parts]


def register(ctx: zmq.Context[zmq.Socket[bytes]], session: Session, info: Msg) -> bool:
    """Report the bound ports on the registration socket; whether the launcher answered."""
    req = ctx.socket(zmq.REQ)
    req.linger = 0
    req.connect(f"tcp://{info['ip']}:{info['registration_port']}")
    ports = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
    content = {name: info[name] for name in ports}
    req.send_multipart(session.frames("handshake_request", content, {"header": {}}, []))
    answered = bool(req.poll(30_000))
    reply = session.parse(req.recv_multipart()) if answered else None
    req.close()
    return reply is not None and reply["header"]["msg_type"] == "handshake_reply"


def main(argv: list[str]) -> int:
    args = argv[2:]
    if "--exit" in args:
        return int(args[args.index("--exit") + 1])
    if "--ignore-term" in args:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if "--grandchild" in args:
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    deadline = None
    crash_after = float(args[args.index("--crash-after") + 1]) if "--crash-after" in args else None
    if "--slow-start" in args:
        time.sleep(float(args[args.index("--slow-start") + 1]))
    with open(argv[1], encoding="utf-8") as f:
        info = json.load(f)
    session = Session(info["key"])
    ctx = zmq.Context()
    registering = "registration_port" in info

    def bind(kind: int, port_name: str) -> zmq.Socket[bytes]:
        sock = ctx.socket(kind)
        sock.linger = 0
        if "--curve" in args and "curve_secretkey" in info:
            sock.curve_secretkey = info["curve_secretkey"].encode()
            sock.curve_publickey = info["curve_publickey"].encode()
            sock.curve_server = True
        if registering:
            info[port_name] = sock.bind_to_random_port(f"tcp://{info['ip']}")
        elif info.get("transport", "tcp") == "ipc":
            sock.bind(f"ipc://{info['ip']}-{info[port_name]}")
        else:
            sock.bind(f"tcp://{info['ip']}:{info[port_name]}")
        return sock

    shell, control = bind(zmq.ROUTER, "shell_port"), bind(zmq.ROUTER, "control_port")
    iopub, hb = bind(zmq.PUB, "iopub_port"), bind(zmq.REP, "hb_port")
    stdin = bind(zmq.ROUTER, "stdin_port")  # kept: a collected socket would unbind the port
    if registering and not register(ctx, session, info):
        return 3
    mute = "--mute" in args
    poller = zmq.Poller()
    for sock in (shell, control, hb, stdin):
        poller.register(sock, zmq.POLLIN)

    def reply(sock: zmq.Socket[bytes], request: Msg, msg_type: str, content: Msg) -> None:
        iopub.send_multipart(session.frames("status", {"execution_state": "busy"}, request, []))
        sock.send_multipart(session.frames(msg_type, content, request, request["ids"]))
        if "--stay-busy" not in args:
            iopub.send_multipart(session.frames("status", {"execution_state": "idle"}, request, []))

    while True:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic()) * 1000
        ready = dict(poller.poll(timeout))
        if deadline is not None and time.monotonic() >= deadline:
            return 1
        if mute:
            for sock in ready:
                sock.recv_multipart()
            continue
        if hb in ready:
            hb.send_multipart(hb.recv_multipart())
        if shell in ready:
            request = session.parse(shell.recv_multipart())
            if request is None:
                continue
            request_type = request["header"]["msg_type"]
            if "--error-replies" in args and request_type != "kernel_info_request":
                error = {
                    "status": "error",
                    "ename": "ValueError",
                    "evalue": "asked",
                    "traceback": [],
                }
                reply(shell, request, request_type.replace("_request", "_reply"), error)
                continue
            info_reply = {
                "status": "ok",
                "protocol_version": "5.4",
                "implementation": "fake",
                "language_info": {"name": "fake"},
            }
            reply(shell, request, "kernel_info_reply", info_reply)
            if crash_after is not None and deadline is None:
                deadline = time.monotonic() + crash_after
        if control in ready and "--mute-control" in args:
            control.recv_multipart()
        elif control in ready:
            request = session.parse(control.recv_multipart())
            if request is None:
                continue
            msg_type = request["header"]["msg_type"]
            if msg_type == "shutdown_request":
                restart = bool(request["content"].get("restart"))
                reply(control, request, "shutdown_reply", {"status": "ok", "restart": restart})
                if "--ignore-shutdown" not in args:
                    return 0
            else:
                reply(control, request, msg_type.replace("_request", "_reply"), {"status": "ok"})


if __name__ == "__main__":
    sys.exit(main(sys.argv))
