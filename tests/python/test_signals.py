# Signals during library calls (a Ctrl-C in a notebook or a training loop) never corrupt the
# process: the stress script runs in a subprocess, so a crash is a failed test, not a dead pytest.
import os
import subprocess
import sys


def test_sigint_bursts_during_attention_calls_do_not_corrupt_the_process():
    script = os.path.join(os.path.dirname(__file__), "signal_stress.py")
    for _ in range(3):
        r = subprocess.run([sys.executable, script, "4"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and r.stdout.startswith("ok:"), (r.returncode, r.stdout[-500:], r.stderr[-2000:])
