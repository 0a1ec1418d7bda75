"""Run by test_signals.py in a subprocess: attention calls while another thread sends bursts of
SIGINT to the process, counted by a Python handler (Python's C handler still runs on whichever
thread the kernel picks, as for KeyboardInterrupt). Every call must give the right result and the
process must not crash."""
import os
import signal
import sys
import threading
import time

import numpy as np
import polysketch

rng = np.random.default_rng(0)
q, k, v = (rng.standard_normal((1, 4, 2048, 64)).astype(np.float32) for _ in range(3))
want = polysketch.attention(q, k, v, mechanism="polysketch", r=16, block=64)
stop = threading.Event()


def pester():
    while not stop.is_set():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.0005)


received = [0]
signal.signal(signal.SIGINT, lambda *_: received.__setitem__(0, received[0] + 1))
thread = threading.Thread(target=pester)
thread.start()
calls = 0
try:
    deadline = time.time() + float(sys.argv[1])
    while time.time() < deadline:
        got = polysketch.attention(q, k, v, mechanism="polysketch", r=16, block=64)
        np.testing.assert_array_equal(got, want)
        calls += 1
finally:
    stop.set()
    thread.join()
assert received[0] > 100, received[0]
print(f"ok: {calls} calls, {received[0]} signals")
