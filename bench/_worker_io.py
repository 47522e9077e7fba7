"""JSON-lines request/response loop shared by the benchmark workers.

A worker runs in its own virtualenv (tftrpo's or sb3's) as a long-lived
subprocess of the orchestrator. It reads one JSON request per line on stdin and
answers one JSON line on the *original* stdout; everything else the libraries
print (C++ logs, warnings, progress) is redirected to stderr so that it can
never corrupt the protocol. Standard library only: both venvs import it.

Requests: {"cmd": "<name>", ...}; the worker's handler for <name> gets the
request dict and returns a JSON-serialisable dict. {"cmd": "quit"} ends it.
Errors are answered as {"error": "<traceback>"} and the worker keeps going.
"""
import json
import os
import sys
import traceback


def serve(handlers):
    """Runs the request loop until stdin closes or {"cmd": "quit"} arrives."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # C-level and Python prints to fd 1 now land on stderr
    sys.stdout = sys.stderr
    proto.write(json.dumps({"ready": True, "pid": os.getpid()}) + "\n")
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            request = json.loads(line)
            cmd = request.get("cmd")
            if cmd == "quit":
                proto.write(json.dumps({"bye": True}) + "\n")
                break
            if cmd not in handlers:
                raise KeyError(f"unknown cmd {cmd!r}; known: {sorted(handlers)}")
            reply = handlers[cmd](request)
        except Exception:  # report and keep serving
            reply = {"error": traceback.format_exc()}
        proto.write(json.dumps(reply) + "\n")
    proto.flush()
