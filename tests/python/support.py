"""What every tests/python script does first: import torch and the tandem module, or exit 77
(reported as skipped by CTest, reason printed) when they are missing and the build did not say
it built the module."""

import os
import sys

SKIP = 77


def skip(reason):
    print(f"SKIPPED: {reason}")
    sys.exit(SKIP)


def require_torch_and_tandem():
    try:
        import torch  # noqa: F401
    except ImportError as e:
        skip(f"torch is not importable by {sys.executable} ({e}); apt-get install python3-torch")
    try:
        import tandem  # noqa: F401
    except ImportError as e:
        if os.environ.get("TANDEM_PYTHON_BUILT") == "ON":
            raise  # the build says it made the module: failing to import it is a failure
        skip(f"the tandem module is not built ({e}); it needs pybind11-dev and python3-dev")
