"""Entry point of the Bazel py_test targets (BUILD): runs pytest with the given arguments."""
import sys

import pytest

if __name__ == "__main__":
    sys.exit(pytest.main(sys.argv[1:]))
