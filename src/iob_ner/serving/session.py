"""serve's two processes. `spacy project run serve` runs scripts/serve.py with subprocess.run, and a
terminal's Ctrl-C reaches spaCy's process too: subprocess.run then waits 0.25 s for its command and kills
it (SIGKILL), long before the queued requests are answered. So the command a user starts only starts the
server in a session of its own (out of reach of the terminal's Ctrl-C), passes SIGINT and SIGTERM on to it
and waits for it; the server stops as on Ctrl-C (the queued requests answered) when its parent is gone,
killed after passing Ctrl-C on, by kill -9, or with its terminal. Only the standard library: the starting
process loads nothing else."""

from __future__ import annotations

import _thread
import os
import signal
import subprocess
import sys
import threading
from typing import Any, List, Optional

PARENT_PIPE = "IOB_NER_SERVE_PARENT_PIPE"  # in the server's environment: the pipe whose end its parent holds
PASSED_ON = (signal.SIGINT, signal.SIGTERM)


def own_session_wanted() -> bool:
    """True in the command a user starts (on POSIX), False in the server it starts."""
    return os.name == "posix" and PARENT_PIPE not in os.environ


def run_in_own_session(argv: List[str]) -> int:
    """Run `argv` (the server) in a new session, pass SIGINT and SIGTERM on to it, wait for it: its exit
    code (a server ended by a signal ends this process by the same signal)."""
    read_end, write_end = os.pipe()  # the server reads end-of-file once this process is gone, however it went
    server = subprocess.Popen(
        argv, env={**os.environ, PARENT_PIPE: str(read_end)}, pass_fds=(read_end,), start_new_session=True
    )
    os.close(read_end)

    def pass_on(sig: int, frame: Any) -> None:  # a second Ctrl-C too: the server then stops at once
        if server.poll() is None:
            server.send_signal(sig)

    for sig in PASSED_ON:
        signal.signal(sig, pass_on)
    code = server.wait()
    os.close(write_end)
    if code < 0:  # ended by a signal: end the same way
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


class ParentWatch:
    """In the server started by run_in_own_session: once its parent is gone, stop as Ctrl-C stops it (a
    uvicorn server handed to `serve` finishes the queued requests; one not yet serving stops loading)."""

    def __init__(self) -> None:
        self.server: Optional[Any] = None
        self.gone = False
        self.lock = threading.Lock()
        pipe = os.environ.pop(PARENT_PIPE, None)
        if pipe is not None:
            threading.Thread(target=self.wait, args=(int(pipe),), daemon=True, name="parent-watch").start()

    def wait(self, pipe: int) -> None:
        try:
            while os.read(pipe, 1024):
                pass
        except OSError:
            pass
        with self.lock:
            self.gone, server = True, self.server
        if server is None:
            _thread.interrupt_main()  # as Ctrl-C while the pipeline loads
        elif not server.should_exit:  # else a Ctrl-C passed on already stops it: a second would cut it short
            server.should_exit = True
            try:  # the terminal may be gone with the parent
                print(
                    f"The command that started the server ended: the server (PID {os.getpid()}) finishes "
                    "the queued requests and stops",
                    file=sys.stderr,
                    flush=True,
                )
            except (OSError, ValueError):
                pass

    def serve(self, server: Any) -> None:
        """server.run(), stopped gracefully once the parent is gone."""
        with self.lock:
            if self.gone:
                raise KeyboardInterrupt
            self.server = server
        server.run()
