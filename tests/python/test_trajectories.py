"""The SDK's trajectory plane and a runtime reader's layout-mismatch message, in one process
(tests/integration/user_actors runs them in a cluster).

Exits 77 (skipped, reason printed) when torch or the tandem module is missing and the build did
not say it built the module.
"""

import tempfile
import unittest

import support

support.require_torch_and_tandem()

import torch  # noqa: E402

import tandem  # noqa: E402
from tandem import _tandem, weights  # noqa: E402


class FakeRuntime:
    """What the layout file helpers read of a runtime."""

    def __init__(self, run_dir):
        self.run_dir = run_dir
        self.job = "job-000001"


class TrajectoryPlaneTest(unittest.TestCase):
    def test_a_batch_crosses_as_msgpack_and_comes_back_as_the_same_dict(self):
        inbox = _tandem.TrajectoryInbox("127.0.0.1")
        self.assertTrue(inbox.endpoint.startswith("tcp://127.0.0.1:"), inbox.endpoint)
        outbox = _tandem.TrajectoryOutbox(inbox.endpoint)
        batch = {"rollout": 1, "batch": 4, "version": 7,
                 "fence": {"job_attempt": 1, "trainer_epoch": 2},
                 "trajectories": [{"p": [1, 5, 6], "c": [7, 2], "lp": [-0.5, -0.25], "r": 0.5,
                                   "g": 12, "v": 7}]}
        import json
        outbox.send_json(json.dumps(batch), 5.0)
        got = None
        for _ in range(50):  # up to 5 s, each a wait on the socket
            text = inbox.next_json(0.1)
            if text is not None:
                got = json.loads(text)
                break
        self.assertEqual(got, batch)
        self.assertIsNone(inbox.next_json(0.01))

    def test_a_batch_that_is_not_a_dict_is_refused(self):
        inbox = _tandem.TrajectoryInbox("127.0.0.1")
        outbox = _tandem.TrajectoryOutbox(inbox.endpoint)
        with self.assertRaises(ValueError):
            outbox.send_json("[1, 2]", 1.0)


class RuntimeLayoutMismatchTest(unittest.TestCase):
    def test_names_both_fingerprints_and_the_first_differing_tensor(self):
        mine = {"model.embed_tokens.weight": torch.zeros(15, 64),
                "model.norm.weight": torch.zeros(64)}
        theirs = {"model.embed_tokens.weight": torch.zeros(15, 64),
                  "model.norm.weight": torch.zeros(32)}
        with tempfile.TemporaryDirectory() as run_dir:
            rt = FakeRuntime(run_dir)
            published = tandem.layout_of(theirs)
            weights._write_layout_file(rt, published)
            expected = tandem.layout_of(mine)
            e = weights._mismatch(rt, "fetch of version 3", expected, published.fingerprint)
            self.assertIsInstance(e, tandem.LayoutMismatchError)
            self.assertEqual(
                str(e),
                f"fetch of version 3: layout mismatch: expected {expected.fingerprint_text}, got "
                f"{published.fingerprint_text}; first difference at tensor 1: expected "
                "model.norm.weight F32[64], got model.norm.weight F32[32]")
            # A publisher whose tensors this reader cannot see: the fingerprints only.
            e = weights._mismatch(rt, "fetch of version 4", expected, 0x1234)
            self.assertIn("got fp:0000000000001234 (the publisher's tensors are not known here)",
                          str(e))


if __name__ == "__main__":
    unittest.main()
