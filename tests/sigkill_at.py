"""Run one ``rdt`` job and SIGKILL its whole process group (driver, Spark JVM, Ray) at a named
point, as a scheduler or a dying node would: a test helper for ``test_kill_jobs.py``.

    python tests/sigkill_at.py POINT -- ingest --config c.yaml --full

POINT is one of
- ``call:<module>:<qualname>#<n>[+<seconds>]``: on the n-th call of that function in the driver
  (before it runs), or that many seconds after it;
- ``audit:<event>:<regex>#<n>``: on the n-th audit event (``os.rename``, ``os.mkdir``,
  ``open``, ...) whose arguments match the regular expression, before the operation happens;
- ``none:#0``: never (the test kills the group from outside, when a file appears).

Nothing in the product knows about this: the points are its own functions and file operations.
A job that ends without reaching its point exits with code 3.

``python tests/sigkill_at.py --serve`` imports the jobs once and then, per JSON line
``{"point": ..., "argv": [...], "log": path}`` on stdin, forks a job process in a session of its
own (its pid on stdout as ``{"pid": n}``, then ``{"pid": n, "returncode": rc}`` when it ends):
each killed job then pays for its own JVM and Ray, not for importing them all again.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
import time


def kill_group() -> None:
    sys.stderr.flush()
    os.killpg(os.getpgrp(), signal.SIGKILL)


def _fire(delay: float) -> None:
    if not delay:
        kill_group()
    threading.Thread(target=lambda: (time.sleep(delay), kill_group()), daemon=True).start()


def arm(point: str) -> None:
    kind, rest = point.split(":", 1)
    what, _, count = rest.rpartition("#")
    count, _, delay = count.partition("+")
    target, seen = int(count), [0]
    if kind == "call":
        module, qualname = what.split(":")

        def profile(frame, event, arg):
            code = frame.f_code
            if (event == "call" and getattr(code, "co_qualname", code.co_name) == qualname
                    and frame.f_globals.get("__name__") == module):
                seen[0] += 1
                if seen[0] == target:
                    sys.setprofile(None)
                    threading.setprofile(None)
                    _fire(float(delay or 0))

        threading.setprofile(profile)
        sys.setprofile(profile)
    elif kind == "audit":
        event_name, _, pattern = what.partition(":")
        needle = re.compile(pattern)

        def hook(event, args):
            if event == event_name and needle.search(repr(args)):
                seen[0] += 1
                if seen[0] == target:
                    _fire(float(delay or 0))

        sys.addaudithook(hook)
    elif kind != "none":
        raise SystemExit(f"unknown kill point {point!r}")


def serve() -> None:
    from jobs.cli import main  # imported once, before any fork

    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:  # the job: a session (and process group) of its own, its output to a log
            os.setsid()
            out = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            os.dup2(out, 1)
            os.dup2(out, 2)
            arm(request["point"])
            try:
                main(request["argv"])
            finally:
                os._exit(3)  # the point was never reached
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"pid": pid, "returncode": os.waitstatus_to_exitcode(status)}),
              flush=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        serve()
        sys.exit(0)
    point, separator, *argv = sys.argv[1:]
    assert separator == "--", "usage: sigkill_at.py POINT -- <rdt job and options>"
    from jobs.cli import main  # imported first: the point counts the job's calls only

    arm(point)
    main(argv)
    sys.exit(3)  # the point was never reached
