"""The weight plane from Python, in one process: a Publisher and a Reader over real UCX on
loopback, with an in-process tandem.Directory standing in for the coordinator.

Exits 77 (skipped, reason printed) when torch or the tandem module is missing and the build did
not say it built the module.
"""

import unittest

import support

support.require_torch_and_tandem()

import torch  # noqa: E402

import tandem  # noqa: E402


def make_state(seed, hidden=64):
    g = torch.Generator().manual_seed(seed)
    return {
        "model.embed_tokens.weight": torch.randn(100, hidden, generator=g).to(torch.bfloat16),
        "model.layers.0.self_attn.q_proj.weight": torch.randn(hidden, hidden, generator=g),
        "model.layers.0.input_layernorm.weight": torch.randn(hidden, generator=g).half(),
        "model.norm.step": torch.tensor(seed, dtype=torch.int64),
        "lm_head.weight": torch.randn(100, hidden, generator=g),
    }


class LayoutFromTensors(unittest.TestCase):
    def test_names_dtypes_shapes_and_order_are_kept(self):
        state = make_state(1)
        layout = tandem.layout_of(state)
        self.assertEqual([t.name for t in layout.tensors], list(state))
        self.assertEqual(layout.tensors[0].dtype, "BF16")
        self.assertEqual(layout.tensors[2].dtype, "F16")
        self.assertEqual(layout.tensors[3].shape, [])
        self.assertEqual(layout.tensors[1].shape, [64, 64])
        self.assertTrue(all(t.offset % 256 == 0 for t in layout.tensors))

    def test_fingerprint_depends_on_shapes_not_values(self):
        self.assertEqual(tandem.layout_of(make_state(1)).fingerprint,
                         tandem.layout_of(make_state(2)).fingerprint)
        other = tandem.layout_of(make_state(1, hidden=32))
        self.assertNotEqual(tandem.layout_of(make_state(1)).fingerprint, other.fingerprint)
        self.assertRegex(other.fingerprint_text, r"^fp:[0-9a-f]{16}$")

    def test_unsupported_dtype_is_named(self):
        with self.assertRaisesRegex(tandem.TandemError, "tensor x: dtype torch.float64"):
            tandem.layout_of({"x": torch.zeros(3, dtype=torch.float64)})


class PublishAndRead(unittest.TestCase):
    def setUp(self):
        self.directory = tandem.Directory()
        self.state = make_state(7)
        self.publisher = tandem.Publisher(self.directory, self.state, chunk_bytes=64 << 10)

    def test_fetched_state_dict_equals_published_tensors(self):
        self.publisher.publish(1, self.state)
        reader = tandem.Reader(self.directory, self.state)
        version, got = reader.fetch()
        self.assertEqual(version, 1)
        self.assertEqual(list(got), list(self.state))
        for name, t in self.state.items():
            self.assertEqual(got[name].dtype, t.dtype, name)
            self.assertTrue(torch.equal(got[name], t), name)

    def test_fetch_into_preallocated_tensors_fills_them_in_place(self):
        reader = tandem.Reader(self.directory, self.state)
        into = reader.empty_state_dict()
        pointers = {name: t.data_ptr() for name, t in into.items()}
        for version in (1, 2, 3):
            state = make_state(version)
            self.publisher.publish(version, state)
            self.assertEqual(reader.fetch(version, into=into), version)
            for name, t in state.items():
                self.assertTrue(torch.equal(into[name], t), f"{name} at version {version}")
                self.assertEqual(into[name].data_ptr(), pointers[name])

    def test_publish_with_a_different_layout_names_fingerprints_and_first_tensor(self):
        wrong = dict(self.state)
        wrong["model.layers.0.self_attn.q_proj.weight"] = torch.zeros(64, 32)
        expected = tandem.layout_of(self.state).fingerprint_text
        got = tandem.layout_of(wrong).fingerprint_text
        with self.assertRaises(tandem.LayoutMismatchError) as caught:
            self.publisher.publish(1, wrong)
        message = str(caught.exception)
        self.assertIn(expected, message)
        self.assertIn(got, message)
        self.assertIn("model.layers.0.self_attn.q_proj.weight F32[64, 32]", message)
        self.assertIsNone(self.directory.newest())

    def test_reader_of_another_layout_names_fingerprints_and_first_tensor(self):
        self.publisher.publish(1, self.state)
        other = make_state(7, hidden=32)
        reader = tandem.Reader(self.directory, other)
        with self.assertRaises(tandem.LayoutMismatchError) as caught:
            reader.fetch()
        message = str(caught.exception)
        self.assertIn(tandem.layout_of(self.state).fingerprint_text, message)
        self.assertIn(tandem.layout_of(other).fingerprint_text, message)
        self.assertIn("model.embed_tokens.weight", message)

    def test_tensors_without_data_are_refused_with_a_reason(self):
        fake = {"x": torch.zeros(2, device="meta")}
        with self.assertRaisesRegex(tandem.TandemError, "tensor x: on meta, which holds no data"):
            tandem.Publisher(self.directory, self.state).publish(2, fake)


class DevicePath(unittest.TestCase):
    """The path CUDA tensors take (torch copies between the device and the registered slot or
    the verified buffer, handed to Python as memoryviews), run with CPU tensors so that it is
    checked on machines without a GPU; CUDA itself in test_cuda_tensors_round_trip."""

    def setUp(self):
        self.directory = tandem.Directory()
        self.state = make_state(11)
        self.publisher = tandem.Publisher(self.directory, self.state, chunk_bytes=64 << 10)
        self.reader = tandem.Reader(self.directory, self.state)

    def test_publishes_and_reads_the_same_bytes_as_the_host_path(self):
        state = dict(self.state)
        # A non-contiguous tensor: torch's copy handles its strides, no extra copy.
        q = "model.layers.0.self_attn.q_proj.weight"
        state[q] = torch.randn(64, 64).t()
        self.assertFalse(state[q].is_contiguous())
        self.publisher._publish_from_device(1, state)
        into = self.reader.empty_state_dict()
        self.assertEqual(self.reader.fetch(1, into=into), 1)  # read back by the host path
        for name, t in state.items():
            self.assertTrue(torch.equal(into[name], t), name)
        self.publisher.publish(2, self.state)  # and the host path's version, read by this one
        self.reader.fetch(2)
        into = self.reader.empty_state_dict()
        self.assertEqual(self.reader._copy_to_device(into), 2)
        for name, t in self.state.items():
            self.assertTrue(torch.equal(into[name], t), name)

    def test_a_different_layout_is_named(self):
        wrong = dict(self.state)
        wrong["lm_head.weight"] = torch.zeros(100, 32)
        with self.assertRaises(tandem.LayoutMismatchError) as caught:
            self.publisher._publish_from_device(1, wrong)
        self.assertIn("lm_head.weight F32[100, 32]", str(caught.exception))
        self.assertIsNone(self.directory.newest())
        self.publisher.publish(1, self.state)
        self.reader.fetch(1)
        with self.assertRaises(tandem.LayoutMismatchError):
            self.reader._copy_to_device({k: v.clone() for k, v in wrong.items()})

    def test_cuda_tensors_round_trip(self):
        if not torch.cuda.is_available():
            self.skipTest("torch.cuda.is_available() is false (no GPU or no CUDA build of torch)")
        cuda = {k: v.cuda() for k, v in self.state.items()}
        self.publisher.publish(1, cuda)
        into = self.reader.empty_state_dict(device="cuda")
        self.assertEqual(self.reader.fetch(1, into=into), 1)
        for name, t in self.state.items():
            self.assertEqual(into[name].device.type, "cuda")
            self.assertTrue(torch.equal(into[name].cpu(), t), name)


if __name__ == "__main__":
    unittest.main()
