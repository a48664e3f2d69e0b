"""tandem.runtime() outside an actor: the errors say what is missing. (Inside an actor it needs a
node agent; no cluster test from Python yet, see docs/python.md.)

Exits 77 (skipped, reason printed) when the tandem module is missing and the build did not say it
built the module.
"""

import os
import sys
import tempfile
import unittest

try:
    import tandem
except ImportError as e:
    if os.environ.get("TANDEM_PYTHON_BUILT") == "ON":
        raise
    print(f"SKIPPED: the tandem module is not built ({e}); it needs pybind11-dev and python3-dev")
    sys.exit(77)


class RuntimeOutsideAnActor(unittest.TestCase):
    def test_without_a_context_names_the_variable(self):
        os.environ.pop("TANDEM_ACTOR_CONTEXT", None)
        with self.assertRaisesRegex(tandem.TandemError, r"\$TANDEM_ACTOR_CONTEXT is not set"):
            tandem.runtime()

    def test_missing_context_file_is_named(self):
        with self.assertRaisesRegex(tandem.TandemError, "actor context /nonexistent/ctx.json"):
            tandem.runtime("/nonexistent/ctx.json")

    def test_malformed_context_file_is_refused(self):
        with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
            f.write("{not json")
            f.flush()
            os.environ["TANDEM_ACTOR_CONTEXT"] = f.name
            try:
                with self.assertRaisesRegex(tandem.TandemError, f"actor context {f.name}"):
                    tandem.runtime()
            finally:
                del os.environ["TANDEM_ACTOR_CONTEXT"]


if __name__ == "__main__":
    unittest.main()
