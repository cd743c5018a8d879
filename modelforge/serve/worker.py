"""The worker process started by :mod:`.supervisor` (``python -m modelforge.serve.worker``).

It reads its MODEL arguments and options as JSON on stdin, inherits the listening socket and
a pipe (``MODELFORGE_SERVE_FDS=SOCKET,PIPE``), serves, and reports ``ready`` or a start-up
``error`` as JSON lines on the pipe. It exits when its supervisor disappears.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(1)  # the supervisor is gone (killed): do not linger as an orphan


def main() -> int:
    from modelforge.errors import ModelForgeError
    from modelforge.serve.server import ReadyInfo, run_in_process
    from modelforge.serve.supervisor import options_from_json

    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the supervisor answers it; not a crash
    sock_fd, pipe_fd = (int(x) for x in os.environ.pop("MODELFORGE_SERVE_FDS").split(","))
    payload = json.loads(sys.stdin.buffer.read())
    opts = options_from_json(payload["options"])
    pipe = os.fdopen(pipe_fd, "w", buffering=1)
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()

    def on_ready(info: ReadyInfo) -> None:
        pipe.write(json.dumps({"event": "ready", "info": info.to_dict()}) + "\n")
        pipe.flush()

    sock = socket.socket(fileno=sock_fd)
    try:
        return run_in_process(
            payload["refs"], opts, sock=sock, on_ready=on_ready, restarts=payload["restarts"]
        )
    except ModelForgeError as err:
        info = {"class": type(err).__name__, **err.to_dict()}
        pipe.write(json.dumps({"event": "error", "error": info}) + "\n")
        pipe.flush()
        return int(err.exit_code)


if __name__ == "__main__":
    sys.exit(main())
