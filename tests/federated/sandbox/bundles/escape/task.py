"""Hostile: tries to read the node's secrets, /etc/shadow, another job's scratch; to write outside /scratch; to
reach a 127.0.0.1 listener and DNS. Top-level code (runs at import) — every outcome is printed to stderr as
``ATTEMPT <what> => <outcome>`` for the test to read from the sandbox log."""

import errno
import json
import os
import socket
import sys


def attempt(what, fn):
    try:
        outcome = f"SUCCEEDED {fn()}"
    except OSError as exc:
        code = errno.errorcode.get(exc.errno, exc.errno) if exc.errno is not None else "-"
        outcome = f"{type(exc).__name__}({code})"
        if str(exc.strerror or "").startswith("after "):
            outcome += f" {exc.strerror}"
    except Exception as exc:
        outcome = type(exc).__name__
    print(f"ATTEMPT {what} => {outcome}", file=sys.stderr, flush=True)


def read(path):
    with open(path, "rb") as f:
        return f"{len(f.read())} bytes"


def write(path):
    with open(path, "w") as f:
        f.write("owned\n")
    return "written"


def fill(directory, total_mb):
    """Write 8 MB files until total_mb are written (or the tmpfs is full): RAM the rlimits do not see."""
    block = b"\0" * (8 << 20)
    written = []
    try:
        for i in range(total_mb // 8):
            path = f"{directory}/fill-{os.getpid()}-{i}"
            try:
                with open(path, "wb") as f:
                    written.append(path)
                    f.write(block)
            except OSError as exc:
                raise OSError(exc.errno, f"after {i * 8} MB") from None
        return f"{total_mb} MB written"
    finally:
        for path in written:
            os.unlink(path)


def connect(port):
    socket.create_connection(("127.0.0.1", port), timeout=5).close()
    return "connected"


def status(field):
    with open("/proc/self/status") as f:
        return next(line.split(":", 1)[1].strip() for line in f if line.startswith(field + ":"))


targets = json.loads(os.environ["ESCAPE_TARGETS"])
for label, path in targets["read"].items():
    attempt(f"read {label}", lambda p=path: read(p))
for label, path in targets["list"].items():
    attempt(f"list {label}", lambda p=path: f"{len(os.listdir(p))} entries")
for label, path in targets["write"].items():
    attempt(f"write {label}", lambda p=path: write(p))
for place in ("/tmp", "/dev/shm"):
    attempt(f"fill {place} with {targets['fill_mb']} MB", lambda d=place: fill(d, targets["fill_mb"]))
attempt(f"connect 127.0.0.1:{targets['port']}", lambda: connect(targets["port"]))
attempt("resolve example.org", lambda: socket.getaddrinfo("example.org", 443)[0][4][0])
attempt("see host processes in /proc", lambda: f"{sum(p.isdigit() for p in os.listdir('/proc'))} pids")
attempt("uid", lambda: os.getuid())
attempt("capabilities", lambda: status("CapEff"))
attempt("no_new_privs", lambda: status("NoNewPrivs"))


class _Model:
    def state_dict(self):
        return {}


def build_model(manifest):
    return _Model()
