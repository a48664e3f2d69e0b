"""The SDK's trajectory plane and a runtime reader's layout-mismatch message, in one process
(tests/integration/user_actors runs them in a cluster).

Exits 77 (skipped, reason printed) when torch or the tandem module is missing and the build did
not say it built the module.
"""

import ctypes
import ctypes.util
import json
import tempfile
import time
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


def curve_pair():
    """A fresh CURVE key pair (Z85 public, secret) from libzmq, or None without CURVE."""
    name = ctypes.util.find_library("zmq")
    if name is None:
        return None
    lib = ctypes.CDLL(name)
    public, secret = ctypes.create_string_buffer(41), ctypes.create_string_buffer(41)
    if lib.zmq_curve_keypair(public, secret) != 0:
        return None
    return public.value.decode(), secret.value.decode()


def receive(inbox, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        text = inbox.next_json(0.1)
        if text is not None:
            return json.loads(text)
    return None


class TrajectoryCurveTest(unittest.TestCase):
    """Placements as the coordinator sends them with CURVE on (common/net/trajectory_curve.h)."""

    def setUp(self):
        self.trainer, self.rollout, self.stranger = curve_pair(), curve_pair(), curve_pair()
        if self.trainer is None:
            self.skipTest("this libzmq has no CURVE (zmq_curve_keypair failed)")
        placement = {"trajectory_curve": {"secret_key": self.trainer[1],
                                          "peers": {self.rollout[0]: "job-000001/rollout-0"}}}
        self.inbox = _tandem.TrajectoryInbox("127.0.0.1", json.dumps(placement))

    def outbox(self, pair):
        placement = {"trajectory_curve": {"secret_key": pair[1], "server_key": self.trainer[0]}}
        return _tandem.TrajectoryOutbox(self.inbox.endpoint, json.dumps(placement))

    def test_the_jobs_rollout_key_gets_through(self):
        outbox = self.outbox(self.rollout)
        self.assertTrue(self.inbox.curve)
        self.assertTrue(outbox.curve)
        batch = {"rollout": 0, "batch": 1, "version": 3, "trajectories": []}
        outbox.send_json(json.dumps(batch), 5.0)
        self.assertEqual(receive(self.inbox, 5.0), batch)
        self.assertEqual(self.inbox.refused, 0)

    def test_another_key_and_a_plain_socket_are_refused(self):
        batch = {"rollout": 9, "batch": 1, "version": 3, "trajectories": []}
        stranger = self.outbox(self.stranger)
        plain = _tandem.TrajectoryOutbox(self.inbox.endpoint)
        self.assertFalse(plain.curve)
        for outbox in (stranger, plain):
            try:
                outbox.send_json(json.dumps(batch), 0.5)
            except tandem.TandemError:
                pass  # no connection ever completes: no room to queue is as good
        self.assertIsNone(receive(self.inbox, 1.0))
        deadline = time.monotonic() + 5.0
        while self.inbox.refused < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertGreaterEqual(self.inbox.refused, 2)

    def test_a_placement_without_keys_is_refused_by_name(self):
        with self.assertRaisesRegex(tandem.TandemError, "trajectory_curve: no secret_key"):
            _tandem.TrajectoryInbox("127.0.0.1", json.dumps({"trajectory_curve": {}}))


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
