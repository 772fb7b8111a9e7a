"""The fake kernel, but a message signed with another key is dropped, as ipykernel drops it.

Usage: tolerant_kernel.py CONNECTION_FILE [fake_kernel.py options]

When two processes race for a port, the client of one can connect to the other's kernel and
send it requests signed with the wrong key. A real kernel logs "Invalid Message" and carries
on; fake_kernel.py raises and dies, which is not what these tests are about. Here such a
message gets a reply addressed to nobody (the ROUTER drops it), framed by busy and idle
statuses on iopub whose parent is no request of the kernel's clients.
"""

from __future__ import annotations

import sys
from typing import Any, cast

# This file's folder is on sys.path when it is run as a script.
import fake_kernel  # type: ignore[import-not-found]

_parse = fake_kernel.Session.parse


def _parse_or_drop(self: Any, frames: list[bytes]) -> dict[str, Any]:
    try:
        return cast(dict[str, Any], _parse(self, frames))
    except ValueError:
        # Routed to identity b"<IDS|MSG>", which no peer has: the reply goes nowhere.
        return {"ids": [], "header": {"msg_type": "foreign_request"}, "content": {}}


fake_kernel.Session.parse = _parse_or_drop

if __name__ == "__main__":
    sys.exit(fake_kernel.main(sys.argv))
