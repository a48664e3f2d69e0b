"""The trajectory plane for Python actors.

A trainer binds a `TrajectoryInbox` and announces it as its "trajectories" endpoint; the job's
rollouts (the built-in C++ ones, or Python ones with a `TrajectoryOutbox`) push batches to it.
A batch is the built-in rollouts' format (rl::TrajectoryBatch, common/rl/grpo_protocol.h) as a
dict: {"rollout", "batch", "version", "fence": {"job_attempt", "trainer_epoch"}, "rollout_s",
"weight_sync_wait_s", "trainer_wait_s", "fetch_s", "generated_tokens", "trajectories": [{"p":
prompt token ids, "c": completion token ids, "lp": behaviour log-probs of "c", "r": reward,
"g": group (prompt index in the data stream), "v": version}]}.
"""

import json

from . import _tandem

ENDPOINT = "trajectories"


class TrajectoryInbox:
    """A PULL socket on the runtime's bind host, announced as this actor's "trajectories"."""

    def __init__(self, runtime, announce=True):
        self._impl = _tandem.TrajectoryInbox(runtime.bind_host)
        if announce:
            runtime.announce_endpoint(ENDPOINT, self.endpoint)

    @property
    def endpoint(self):
        return self._impl.endpoint

    def next(self, timeout_s=0.1):
        """The next batch (a dict), or None when none came within timeout_s. The GIL is
        released while waiting and decoding."""
        text = self._impl.next_json(float(timeout_s))
        return None if text is None else json.loads(text)


class TrajectoryOutbox:
    """A PUSH socket to a trainer's "trajectories" endpoint."""

    def __init__(self, runtime, trainer=None, timeout_s=120.0):
        trainer = trainer or f"{runtime.job}/trainer-0"
        self._impl = _tandem.TrajectoryOutbox(runtime.wait_endpoint(trainer, ENDPOINT, timeout_s))

    def send(self, batch, timeout_s=30.0):
        self._impl.send_json(json.dumps(batch), float(timeout_s))
