"""An SMTP server in a process of its own (mailer's capture server, storing each message as
an .eml file), for tests that measure the event loop of the worker under test: in the same
process, the server's own work on a large message would stop that loop too."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import ROOT
from tests.support.processes import free_port

_SERVE = """
import asyncio, sys
from pathlib import Path
from mailer.adapters.capture import CaptureServer

async def serve():
    await CaptureServer(Path(sys.argv[1]), port=int(sys.argv[2])).start()
    await asyncio.Event().wait()

asyncio.run(serve())
"""


@contextlib.contextmanager
def capture_process(folder: Path) -> Iterator[int]:
    """The port of a capture server writing into `folder`, stopped afterwards."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", _SERVE, str(folder), str(port)], cwd=ROOT)
    try:
        deadline = time.monotonic() + 15
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the capture server did not start (exit {process.poll()})")
            time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(10)
