"""What the serve tests share: a polysketch server on loopback (started on a free port, stopped by
SIGTERM), HTTP calls with timeouts, a check list, and a tiny model to serve."""
import ctypes
import http.client
import json
import os
import signal
import socket
import subprocess
import tempfile
import time

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what, flush=True)


def run(binary, *args):
    subprocess.run([binary, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)


def tiny_model(binary, tmp, mechanism="polysketch-learned-local", steps=30):
    """A tiny model on the KJV (prepared data has the end-of-document token): tmp/run (or
    tmp/run-MECHANISM for another mechanism)."""
    if not os.path.exists(f"{tmp}/data/meta.json"):
        run(binary, "prepare", "--out", f"{tmp}/data", "--vocab-size", "512")
    out = f"{tmp}/run" if mechanism == "polysketch-learned-local" else f"{tmp}/run-{mechanism}"
    run(binary, "train", "--data", f"{tmp}/data", "--out", out, "--mechanism", mechanism, "--layers", "2",
        "--width", "64", "--heads", "2", "--context", "64", "--r", "8", "--block", "16", "--batch", "4",
        "--steps", str(steps), "--eval-every", "0", "--threads", "1")
    return out


def metric(server, name):
    for line in server.get("/metrics")[1].splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    check(False, f"metric {name}")
    return 0


def die_with_parent():
    """For Popen's preexec_fn: the child gets SIGTERM when the test process dies (a test killed by
    its timeout leaves no server behind)."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, binary, checkpoint, *flags, threads=1, start_s=10):
        self.port = free_port()
        # The server's stderr goes to a file: a pipe nobody reads would block a chatty server.
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([binary, "serve", "--checkpoint", checkpoint, "--port", str(self.port),
                                      "--threads", str(threads), *flags], stderr=self.log,
                                     preexec_fn=die_with_parent)
        for _ in range(int(start_s * 10)):
            try:
                if self.get("/health")[0] == 200:
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("the server did not start")

    def conn(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)

    def get(self, path, headers=None):
        c = self.conn()
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        return r.status, r.read().decode()

    def call(self, method, path, body, headers=None):
        c = self.conn()
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        c.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        r = c.getresponse()
        text = r.read().decode()
        try:
            return r.status, json.loads(text), r
        except ValueError:
            return r.status, text, r

    def post(self, path, body, headers=None):
        return self.call("POST", path, body, headers)

    def stream(self, path, body):
        """The data: events of a streamed request (until [DONE])."""
        c = self.conn()
        c.request("POST", path, body=json.dumps({**body, "stream": True}), headers={"Content-Type": "application/json"})
        r = c.getresponse()
        assert r.status == 200, (r.status, r.read())
        check(r.getheader("Content-Type", "").startswith("text/event-stream"), "stream content type")
        events, buf = [], b""
        while True:
            chunk = r.read1(65536) if hasattr(r, "read1") else r.read(1)
            if not chunk:
                break
            buf += chunk
            while b"\n\n" in buf:
                line, buf = buf.split(b"\n\n", 1)
                line = line.decode()
                check(line.startswith("data: "), f"event line {line!r}")
                if line == "data: [DONE]":
                    return events
                events.append(json.loads(line[6:]))
        check(False, "stream ended without [DONE]")
        return events

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        check(code == 0, f"exit status {code} after SIGTERM")
