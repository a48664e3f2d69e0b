"""tandem.runtime(): the actor runtime inside an actor started by a node agent.

The agent writes an actor context file (common/agent/actor_context.h) and the actor connects to the
agent's runtime socket named in it. Built-in actors get the path as `--context FILE`; a Python
actor passes it to runtime(context_path=...) or sets TANDEM_ACTOR_CONTEXT. (Job files cannot name
Python actors yet: see docs/python.md.)
"""

import json
import os

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


def runtime(context_path=None):
    """Connects to this actor's node agent (context file from the argument or
    $TANDEM_ACTOR_CONTEXT)."""
    path = context_path or os.environ.get(CONTEXT_VARIABLE)
    if not path:
        raise _tandem.TandemError(
            f"not inside a Tandem actor: no context file given and ${CONTEXT_VARIABLE} is not set")
    return Runtime(_tandem.Runtime.connect(path))
