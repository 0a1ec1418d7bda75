import os
import subprocess

import pytest


@pytest.fixture(scope="session")
def polysketch_bin():
    path = os.environ.get("POLYSKETCH_BIN")
    if not path:
        pytest.skip("POLYSKETCH_BIN is not set (ctest sets it)")
    return path


@pytest.fixture(scope="session")
def trained(tmp_path_factory, polysketch_bin):
    """A tiny text model trained by the CLI: (data dir, run dir)."""
    root = tmp_path_factory.mktemp("cli")
    text = root / "text.txt"
    text.write_text(subprocess.run(["bible", "Gen1:1-Gen30:1"], check=True, capture_output=True,
                                   text=True).stdout)
    data, run = root / "data", root / "run"
    subprocess.run([polysketch_bin, "prepare", "--input", str(text), "--out", str(data),
                    "--vocab-size", "400"], check=True, capture_output=True)
    subprocess.run([polysketch_bin, "train", "--data", str(data), "--out", str(run), "--layers", "2",
                    "--width", "32", "--heads", "2", "--context", "32", "--r", "8", "--block", "8",
                    "--batch", "4", "--steps", "20", "--eval-batches", "1", "--threads", "2"],
                   check=True, capture_output=True)
    return data, run
