"""tandem.runtime(): the actor runtime inside an actor started by a node agent.

The agent writes an actor context file (common/agent/actor_context.h) and the actor connects to the
agent's runtime socket named in it. Built-in actors get the path as `--context FILE`; a user actor
(a job file's `trainer: {command: [...]}` or `rollout: {command: [...]}`) finds it in
$TANDEM_ACTOR_CONTEXT, which its node agent sets (docs/python.md, "User actors").
"""

import json
import os
import time

from . import _tandem

CONTEXT_VARIABLE = "TANDEM_ACTOR_CONTEXT"

_LEVELS = {"trace", "debug", "info", "warn", "error"}


class Runtime:
    """Identity, progress, metrics, events, log lines and failure of this actor."""

    def __init__(self, impl):
        self._impl = impl

    actor = property(lambda self: self._impl.actor)
    attempt = property(lambda self: self._impl.attempt)
    node = property(lambda self: self._impl.node)
    run_dir = property(lambda self: self._impl.run_dir)
    connected = property(lambda self: self._impl.connected)
    cancelled = property(lambda self: self._impl.cancelled)

    @property
    def placement(self):
        return json.loads(self._impl.placement_json)

    def progress(self, **fields):
        """{"step": N, "fraction": f, ...}, shown by `tandem status`."""
        self._impl.progress_json(json.dumps(fields))

    def metrics(self, step, values):
        """Flat name -> number for one step ("rollout/reward_mean")."""
        self._impl.metrics_json(int(step), json.dumps({k: float(v) for k, v in values.items()}))

    def event(self, kind, message):
        self._impl.event(kind, message)

    def log(self, message, level="info"):
        if level not in _LEVELS:
            raise ValueError(f"log level {level!r}: expected one of {sorted(_LEVELS)}")
        self._impl.log(level, message)

    def fail(self, reason):
        """The reason this actor is about to fail; reported with its exit code."""
        self._impl.fail(reason)

    # ---- spec, versions, endpoints, the job view ----

    @property
    def spec(self):
        """The job spec with every default filled in, as a dict (the job file's fields)."""
        import re

        import yaml  # python3-yaml; only needed here

        class Loader(yaml.SafeLoader):
            pass

        # YAML 1.1 reads "1e-05" (no dot) as a string; the spec is written as YAML 1.2 numbers.
        Loader.add_implicit_resolver(
            "tag:yaml.org,2002:float",
            re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$|^[-+]?\.inf$"
                       r"|^\.nan$"),
            list("-+0123456789."))
        return yaml.load(self._impl.spec_yaml, Loader=Loader)

    @property
    def job(self):
        return self.actor.split("/")[0]

    @property
    def bind_host(self):
        """The address this actor binds its channels on (its node's data-network address)."""
        return self._impl.bind_host

    def assign_version(self, step, data_cursor=0, timeout_s=600.0, at_least=0):
        """The coordinator's number for the version holding the weights after `step` steps:
        {"version", "fence": {"job_attempt", "trainer_epoch"}, "step", "data_cursor"}. Asking
        again for the same step gives the same number. Raises TandemError (unavailable) when this
        trainer has been fenced off."""
        return json.loads(self._impl.assign_version_json(int(step), int(data_cursor),
                                                         float(timeout_s), int(at_least)))

    def announce_endpoint(self, name, address):
        """Serves `address` under `name` ("trajectories"); peers see it in their views."""
        self._impl.announce_endpoint(name, address)

    def wait_endpoint(self, peer, name, timeout_s=60.0):
        """The address `peer` ("job-000001/trainer-0") announced under `name`, once it has."""
        return self._impl.wait_endpoint(peer, name, float(timeout_s))

    def view(self):
        """The job as the coordinator last pushed it: {"generation", "connected", "cancelled",
        "fence", "newest" (version info or None), "peers": [{"actor", "attempt", "phase",
        "alive", "endpoints"}], "metrics_step"}."""
        return json.loads(self._impl.view_json())

    def wait_change(self, seen, timeout_s=1.0):
        """Waits until the view's generation exceeds `seen` (or timeout_s); returns the view."""
        return json.loads(self._impl.wait_change_json(int(seen), float(timeout_s)))

    def live_peers(self, role):
        """Live actors of `role` ("trainer" or "rollout") in the current view."""
        return [p for p in self.view()["peers"]
                if p["alive"] and p["actor"].split("/")[1].startswith(role + "-")]

    def weight_transports(self):
        """UCX transports for the weight plane, chosen as the built-in actors choose them
        (rl::weight_transports): shared memory when every actor of the job is on one host."""
        hosts = {a.get("host", "") for a in self.placement.get("actors", {}).values()}
        return "shm,self" if len(hosts) == 1 and "" not in hosts else ""

    def wait_until(self, predicate, timeout_s, what):
        """Waits on view changes until predicate(view) is true; TandemError naming `what` at the
        deadline or when the job is cancelled."""
        deadline = time.monotonic() + timeout_s
        view = self.view()
        while not predicate(view):
            if view["cancelled"]:
                raise _tandem.TandemError(f"cancelled while waiting for {what}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise _tandem.TandemError(f"deadline_exceeded: {what} within {timeout_s} s")
            view = self.wait_change(view["generation"], min(left, 1.0))
        return view


def runtime(context_path=None):
    """Connects to this actor's node agent (context file from the argument or
    $TANDEM_ACTOR_CONTEXT)."""
    path = context_path or os.environ.get(CONTEXT_VARIABLE)
    if not path:
        raise _tandem.TandemError(
            f"not inside a Tandem actor: no context file given and ${CONTEXT_VARIABLE} is not set")
    return Runtime(_tandem.Runtime.connect(path))
