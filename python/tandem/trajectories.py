"""The trajectory plane for Python actors.

A trainer binds a `TrajectoryInbox` and announces it as its "trajectories" endpoint; the job's
rollouts (the built-in C++ ones, or Python ones with a `TrajectoryOutbox`) push batches to it.
A batch is the built-in rollouts' format (rl::TrajectoryBatch, common/rl/grpo_protocol.h) as a
dict: {"rollout", "batch", "version", "fence": {"job_attempt", "trainer_epoch"}, "rollout_s",
"weight_sync_wait_s", "trainer_wait_s", "fetch_s", "generated_tokens", "trajectories": [{"p":
prompt token ids, "c": completion token ids, "lp": behaviour log-probs of "c", "r": reward,
"g": group (prompt index in the data stream), "v": version}]}.

On a cluster with CURVE on (docs/security.md) the runtime's placement carries this actor's
trajectory keys and both sockets use them, as the built-in actors do: the inbox accepts only the
job's rollouts (`refused` counts the connections it turned away).
"""

import json

from . import _tandem

ENDPOINT = "trajectories"


def _placement_json(runtime):
    # The placement carries "trajectory_curve" (this actor's keys) when CURVE is on.
    return json.dumps(runtime.placement)


class TrajectoryInbox:
    """A PULL socket on the runtime's bind host, announced as this actor's "trajectories"."""

    def __init__(self, runtime, announce=True):
        self._impl = _tandem.TrajectoryInbox(runtime.bind_host, _placement_json(runtime))
        if announce:
            runtime.announce_endpoint(ENDPOINT, self.endpoint)

    @property
    def endpoint(self):
        return self._impl.endpoint

    @property
    def curve(self):
        """Whether the socket is a CURVE server (the cluster has CURVE on)."""
        return self._impl.curve

    @property
    def refused(self):
        """Connections refused by CURVE (a key not of this job's rollouts, a peer without it)."""
        return self._impl.refused

    def next(self, timeout_s=0.1):
        """The next batch (a dict), or None when none came within timeout_s. The GIL is
        released while waiting and decoding."""
        text = self._impl.next_json(float(timeout_s))
        return None if text is None else json.loads(text)


class TrajectoryOutbox:
    """A PUSH socket to a trainer's "trajectories" endpoint."""

    def __init__(self, runtime, trainer=None, timeout_s=120.0):
        trainer = trainer or f"{runtime.job}/trainer-0"
        self._impl = _tandem.TrajectoryOutbox(runtime.wait_endpoint(trainer, ENDPOINT, timeout_s),
                                              _placement_json(runtime))

    @property
    def curve(self):
        """Whether the socket is a CURVE client (the cluster has CURVE on)."""
        return self._impl.curve

    def send(self, batch, timeout_s=30.0):
        self._impl.send_json(json.dumps(batch), float(timeout_s))
