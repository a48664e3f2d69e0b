#!/usr/bin/python3
"""A job's trainer for tandem_integration_weights_cluster (weights_cluster_test.cc): publishes
version 0 through the SDK's Publisher with a layout that is not the job model's (one tensor,
model.embed_tokens.weight of shape [3, 3]), then waits for the job to be cancelled. The built-in
C++ rollout must refuse that version naming the first differing tensor."""
import time

import torch

import tandem

rt = tandem.runtime()
weights = {"model.embed_tokens.weight": torch.zeros(3, 3)}
tandem.Publisher(rt, weights).publish_step(0, weights)
rt.log("published version 0 with another layout")
deadline = time.monotonic() + 120
while not rt.cancelled and time.monotonic() < deadline:
    time.sleep(0.1)
