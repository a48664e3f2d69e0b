"""tandem.Checkpoints: a Python trainer's checkpoints under the job's `checkpoint:` settings (saved
with step, version, fence and data cursor, pruned to keep_last, the newest found again on resume,
a half-written one ignored). The actor's runtime is stood in for by its four fields.

Exits 77 (skipped, reason printed) when torch or the tandem module is missing and the build did
not say it built the module.
"""

import os
import shutil
import tempfile
import unittest

import support

support.require_torch_and_tandem()

import torch  # noqa: E402

import tandem  # noqa: E402


class FakeRuntime:
    """The fields Checkpoints reads from tandem.runtime()."""

    def __init__(self, run_dir, checkpoint, attempt=1):
        self.run_dir = run_dir
        self.job = "job-000007"
        self.attempt = attempt
        self.spec = {"checkpoint": checkpoint}


def info(version, step, epoch=1):
    return {"version": version, "step": step, "data_cursor": step * 8,
            "fence": {"job_attempt": 1, "trainer_epoch": epoch}}


class Checkpoints(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="tandem_ckpt_")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.spec = {"dir": "", "every_steps": 5, "resume": "auto", "keep_last": 2}

    def test_saves_step_version_and_state_and_resumes_from_the_newest(self):
        first = tandem.Checkpoints(FakeRuntime(self.dir, self.spec))
        self.assertEqual(first.directory,
                         os.path.join(self.dir, "jobs", "job-000007", "checkpoints"))
        self.assertIsNone(first.latest())
        self.assertEqual([s for s in range(1, 16) if first.due(s)], [5, 10, 15])
        for step in (5, 10, 15):
            w = torch.full((3,), float(step))
            path = first.save(step, info(step + 1, step), {"w": w, "opt": {"step": step}})
            self.assertTrue(path.endswith(f"step-{step:08d}"), path)
        # keep_last 2: the oldest is gone.
        self.assertEqual([c.step for c in first.list()], [10, 15])

        again = tandem.Checkpoints(FakeRuntime(self.dir, self.spec, attempt=2))
        got = again.latest()
        self.assertEqual((got.step, got.version, got.data_cursor, got.attempt), (15, 16, 120, 1))
        self.assertEqual(got.fence["trainer_epoch"], 1)
        state = got.state()
        self.assertTrue(torch.equal(state["w"], torch.full((3,), 15.0)))
        self.assertEqual(state["opt"], {"step": 15})

    def test_a_half_written_checkpoint_is_not_the_newest(self):
        ck = tandem.Checkpoints(FakeRuntime(self.dir, self.spec))
        ck.save(5, info(6, 5), {"w": torch.zeros(1)})
        # What a kill during save() leaves: the temporary directory, never renamed.
        os.makedirs(os.path.join(ck.directory, "step-00000010.tmp-123"))
        self.assertEqual(ck.latest().step, 5)

    def test_resume_never_and_a_directory_of_its_own(self):
        own = os.path.join(self.dir, "mine")
        spec = dict(self.spec, dir=own, resume="never")
        ck = tandem.Checkpoints(FakeRuntime(self.dir, spec))
        ck.save(5, info(6, 5), {"w": torch.zeros(1)})
        self.assertTrue(os.path.isdir(os.path.join(own, "step-00000005")))
        self.assertIsNone(ck.latest())
        self.assertEqual([c.step for c in ck.list()], [5])
        off = tandem.Checkpoints(FakeRuntime(self.dir, dict(self.spec, every_steps=0)))
        self.assertFalse(any(off.due(s) for s in range(0, 20)))

    def test_an_unreadable_checkpoint_is_named(self):
        ck = tandem.Checkpoints(FakeRuntime(self.dir, self.spec))
        bad = os.path.join(ck.directory, "step-00000005")
        os.makedirs(bad)
        with open(os.path.join(bad, "trainer_state.json"), "w") as f:
            f.write("{not json")
        with self.assertRaisesRegex(tandem.TandemError,
                                    f"checkpoint {bad}: unreadable trainer_state.json"):
            ck.latest()


if __name__ == "__main__":
    unittest.main()
