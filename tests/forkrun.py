"""Runs Python programs as processes forked from one pre-imported server.

Starting `python apps/train.py ...` spends about 4 s (twice that on a loaded
machine) importing TensorFlow, Keras and he_keras before the app reads its
first flag; the tests start dozens of such processes. `run` gives the same
result as

    subprocess.run([sys.executable, *args], capture_output=True, text=True, ...)

but the process is a fork of a server that has already imported those
modules and has not yet done anything else (no TensorFlow op, no flag
defined): the child runs the program from its first line as `__main__`
(module code, flag definitions, `app.run`, ...) in a process of its own,
with its own exit code or signal, stdout and stderr, as a fresh interpreter
would (an uncaught exception prints its traceback and exits 1, `SystemExit`
its code, atexit handlers run).

What a fork shares with its siblings (and a fresh interpreter would not):
the hash seed of `str` (`PYTHONHASHSEED`) and the memory layout, hence the
order of sets of strings or objects. Tests that compare independent
processes with each other (a resumed run against an uninterrupted one,
workers against each other) must not run both sides through `run`. The
global `random` and NumPy generators are reseeded from the OS in each child.

Environment variables read at import time (`KERAS_BACKEND`,
`TF_CPP_MIN_LOG_LEVEL`, `PYTHONPATH`, ...) are the server's: a call whose
environment differs from the server's in anything but `RUNTIME_ENV` runs in a
real subprocess instead. Tests of what a fresh interpreter imports must keep
using `subprocess` directly. `FORKRUN_DISABLE=1` runs every call in a real
subprocess (slower; to rule the server out when a test misbehaves).

Run as a script, this file is the server: it reads one JSON request a line
on stdin, forks a child per request (any number at a time) and answers each
with one JSON line on stdout when the child ends.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import tempfile
import threading

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Read when a program uses them, not at import: may differ from the server's.
RUNTIME_ENV = frozenset({"TF_CONFIG", "PYTEST_CURRENT_TEST"})
# The server's environment: the caller's, with TensorFlow's C++ logging quiet.
SERVER_ENV = {k: v for k, v in os.environ.items() if k not in RUNTIME_ENV}
SERVER_ENV["TF_CPP_MIN_LOG_LEVEL"] = "3"
PRELOAD = (
    "numpy", "tensorflow", "keras", "absl.app", "absl.flags", "absl.logging", "sklearn.datasets",
    "matplotlib.pyplot", "he_keras", "he_keras.data", "he_keras.models", "he_keras.models.io",
    "he_keras.attacks", "he_keras.training", "he_keras.runs", "he_keras.evaluation",
    "he_keras.evaluation.checks", "he_keras.export", "he_keras.files",
)


# === Client ===


class _Server:
    def __init__(self):
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            cwd=ROOT, env=SERVER_ENV, text=True, bufsize=1,
        )
        self.lock = threading.Lock()
        self.pending = {}  # request id -> [event, result]
        self.next_id = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            answer = json.loads(line)
            with self.lock:
                slot = self.pending.pop(answer["id"])
            slot[1] = answer
            slot[0].set()
        with self.lock:  # The server died: wake every caller.
            for slot in self.pending.values():
                slot[0].set()
            self.pending.clear()

    def request(self, message, timeout):
        slot = [threading.Event(), None]
        with self.lock:
            message["id"] = self.next_id
            self.next_id += 1
            self.pending[message["id"]] = slot
            self.proc.stdin.write(json.dumps(message) + "\n")
            self.proc.stdin.flush()
        if not slot[0].wait(timeout):
            with self.lock:
                self.proc.stdin.write(json.dumps({"kill": message["id"]}) + "\n")
                self.proc.stdin.flush()
            slot[0].wait(60)
            raise subprocess.TimeoutExpired(message["argv"], timeout)
        if slot[1] is None:
            raise RuntimeError(f"the fork server ended (exit code {self.proc.poll()})")
        return slot[1]["returncode"]

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(60)


_server = None
FALLBACKS = []  # (program, environment variables that differed) of calls run by subprocess
_server_lock = threading.Lock()


def _get_server():
    global _server
    with _server_lock:
        if _server is None or _server.proc.poll() is not None:
            _server = _Server()
            atexit.register(_server.close)
        return _server


def run(args, *, cwd=ROOT, env=None, timeout=600) -> subprocess.CompletedProcess:
    """`subprocess.run([sys.executable, *args], capture_output=True, text=True)`, forked.

    `args` is a script path, `-c` and code, or `-m` and a module, followed by
    the program's arguments.
    """
    args = [str(a) for a in args]
    if env is None:
        env = dict(SERVER_ENV, **{k: v for k, v in os.environ.items() if k in RUNTIME_ENV})
    env = dict(env)
    differs = {k for k in set(env) | set(SERVER_ENV) if env.get(k) != SERVER_ENV.get(k)} - RUNTIME_ENV
    if differs or os.environ.get("FORKRUN_DISABLE"):
        FALLBACKS.append((args[:1], sorted(differs)))
        return subprocess.run(
            [sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env
        )
    with tempfile.TemporaryDirectory(prefix="forkrun") as tmp:
        out, err = os.path.join(tmp, "stdout"), os.path.join(tmp, "stderr")
        returncode = _get_server().request(
            {"argv": args, "cwd": str(cwd), "env": env,
             "stdout": out, "stderr": err},
            timeout,
        )
        with open(out, errors="replace") as f_out, open(err, errors="replace") as f_err:
            return subprocess.CompletedProcess([sys.executable, *args], returncode, f_out.read(), f_err.read())


# === Server ===


def _child(request, channel):
    """Runs the request's program as a fresh interpreter would; never returns."""
    code = 1
    try:
        os.close(channel)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        # Seeded from the OS as in a fresh interpreter, not the server's state.
        import random

        random.seed()
        if "numpy" in sys.modules:
            sys.modules["numpy"].random.seed()
        import builtins
        import types

        argv = request["argv"]
        if argv[0] == "-m":
            import runpy

            # As `python -m`: the working directory first on the path.
            sys.argv, sys.path[0] = [argv[1], *argv[2:]], os.getcwd()

            def program():
                runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            if argv[0] == "-c":
                source, filename, sys.argv = argv[1], "<string>", ["-c", *argv[2:]]
                sys.path[0] = ""
            else:
                filename = os.path.abspath(argv[0])
                with open(filename) as f:
                    source = f.read()
                sys.argv = list(argv)
                sys.path[0] = os.path.dirname(filename)
            main = types.ModuleType("__main__")
            main.__builtins__ = builtins
            if filename != "<string>":
                main.__file__ = filename
            sys.modules["__main__"] = main

            def program():
                exec(compile(source, filename, "exec"), main.__dict__)
        try:
            program()
            code = 0
        except SystemExit as exit:
            if exit.code is None:
                code = 0
            elif isinstance(exit.code, int):
                code = exit.code
            else:
                print(exit.code, file=sys.stderr)
                code = 1
        except BaseException:
            kind, value, traceback = sys.exc_info()
            sys.excepthook(kind, value, traceback.tb_next)  # from the program's first frame
            code = 1
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def _serve():
    import importlib
    import select
    import signal

    channel = os.dup(1)  # Answers; fd 1 itself goes to stderr.
    os.dup2(2, 1)
    sys.path[0] = ROOT  # he_keras of this checkout, as the apps insert it
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    children = {}  # pid -> request id
    pids = {}  # request id -> pid
    buffer = b""
    open_input = True
    while open_input or children:
        if open_input:
            ready, _, _ = select.select([0], [], [], 0.02)
            if ready:
                chunk = os.read(0, 65536)
                open_input = bool(chunk)
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    request = json.loads(line)
                    if "kill" in request:
                        if request["kill"] in pids:
                            os.kill(pids[request["kill"]], signal.SIGKILL)
                        continue
                    sys.stdout.flush()
                    sys.stderr.flush()
                    pid = os.fork()
                    if pid == 0:
                        _child(request, channel)
                    children[pid] = request["id"]
                    pids[request["id"]] = pid
        else:
            select.select([], [], [], 0.02)
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            request_id = children.pop(pid)
            del pids[request_id]
            answer = {"id": request_id, "returncode": os.waitstatus_to_exitcode(status)}
            os.write(channel, (json.dumps(answer) + "\n").encode())


if __name__ == "__main__":
    _serve()
