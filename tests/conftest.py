import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), "shared")


def shared_path(*parts: str) -> str:
    """A file under ../shared, or a skip when the reference data is not checked out beside the repo."""
    path = os.path.join(SHARED, *parts)
    if not os.path.exists(path):
        pytest.skip(f"../shared not present ({os.path.join(*parts)} missing)")
    return path


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tflm_train.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
