"""Checkpoints of a Python trainer, and resuming from them after its actor is restarted.

A trainer killed mid-job (kill -9, a lost node) is started again by its node agent
(`max_actor_restarts`) as a new attempt with a new fence. What it needs to go on where it was:
its step, the data cursor and the last version number it was assigned (so numbering continues
above it even if the coordinator lost its record), plus whatever its own code needs (parameters,
the optimizer's state_dict(), random generators). `Checkpoints` stores the first three with the
user's state (anything `torch.save` takes) under the job's `checkpoint:` settings, the same
directory layout as the built-in trainer (`<dir>/step-00000010/`), and hands the newest one back
when `checkpoint.resume: auto`. See docs/python.md, "Checkpoint and resume".
"""

import json
import os
import re
import shutil

from . import _tandem

_STEP_DIR = re.compile(r"^step-(\d{8,})$")
STATE_FILE = "state.pt"
TRAINER_STATE_FILE = "trainer_state.json"


class Checkpoint:
    """One saved checkpoint: step, version, fence, data_cursor, attempt, path; `state()` loads
    what the trainer saved."""

    def __init__(self, path, meta):
        self.path = path
        self.step = int(meta["step"])
        self.version = int(meta["version"])
        self.data_cursor = int(meta["data_cursor"])
        self.fence = meta.get("fence", {})
        self.attempt = int(meta.get("attempt", 0))

    def state(self, map_location="cpu"):
        import torch

        return torch.load(os.path.join(self.path, STATE_FILE), map_location=map_location)

    def __repr__(self):
        return (f"<Checkpoint step {self.step} version {self.version} data_cursor "
                f"{self.data_cursor} at {self.path}>")


class Checkpoints:
    """A trainer's checkpoints, under the job's `checkpoint:` settings: `dir` (default
    <run_dir>/jobs/<job>/checkpoints), `every_steps` (0: off), `keep_last`, and `resume` (auto:
    `latest()` returns the newest checkpoint; never: it returns None)."""

    def __init__(self, rt, directory=None):
        spec = rt.spec.get("checkpoint", {})
        self.directory = (directory or spec.get("dir") or
                          os.path.join(rt.run_dir, "jobs", rt.job, "checkpoints"))
        self.every_steps = int(spec.get("every_steps", 0))
        self.keep_last = int(spec.get("keep_last", 2))
        self.resume = spec.get("resume", "never") == "auto"
        self._attempt = rt.attempt

    def due(self, step):
        """Whether `step` is one to checkpoint (a multiple of checkpoint.every_steps)."""
        return self.every_steps > 0 and step > 0 and step % self.every_steps == 0

    def save(self, step, info, state):
        """Writes `state` (torch.save) with `step` and the version info dict the publisher
        returned for that step (version, fence, data_cursor) as <dir>/step-NNNNNNNN, atomically
        (a directory renamed into place, so a kill mid-save leaves the previous one newest), then
        removes all but the newest keep_last. Returns the path."""
        import torch

        path = os.path.join(self.directory, f"step-{int(step):08d}")
        tmp = f"{path}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        torch.save(state, os.path.join(tmp, STATE_FILE))
        meta = {"step": int(step), "version": int(info["version"]),
                "data_cursor": int(info.get("data_cursor", 0)), "fence": info.get("fence", {}),
                "attempt": self._attempt}
        with open(os.path.join(tmp, TRAINER_STATE_FILE), "w") as f:
            json.dump(meta, f)
            f.flush()
            os.fsync(f.fileno())
        if os.path.exists(path):  # the same step again (a resumed run): replace it
            shutil.rmtree(path)
        os.rename(tmp, path)
        self._prune()
        return path

    def list(self):
        """Complete checkpoints, oldest first."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            if not _STEP_DIR.match(name):
                continue
            path = os.path.join(self.directory, name)
            try:
                with open(os.path.join(path, TRAINER_STATE_FILE)) as f:
                    out.append(Checkpoint(path, json.load(f)))
            except (OSError, ValueError, KeyError) as e:
                raise _tandem.TandemError(
                    f"checkpoint {path}: unreadable {TRAINER_STATE_FILE} ({e})") from e
        return sorted(out, key=lambda c: c.step)

    def latest(self):
        """The newest checkpoint when checkpoint.resume is auto (None when there is none or
        resume is never)."""
        if not self.resume:
            return None
        found = self.list()
        return found[-1] if found else None

    def _prune(self):
        for old in self.list()[:-self.keep_last]:
            shutil.rmtree(old.path, ignore_errors=True)
