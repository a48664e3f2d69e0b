#!/usr/bin/python3
"""A rollout actor in Python that reads every version of the built-in C++ trainer.

Run by a node agent as one of the job's rollouts (job.yaml: `rollout: {command: [...]}`). For
each step it waits for the trainer's next version, fetches it through the SDK's Reader into a
state_dict (one copy out of the verified UCX buffer), samples group_size completions for its
share of the step's prompts with that policy in PyTorch, scores them with the task's positional
reward and pushes them to the trainer's trajectory inbox, tagged with the version and its fence,
as the built-in rollouts do. Every version it reads is logged with a checksum of its tensors:

    fetched version 3 (step 3, fence {...}) in 0.004 s: 25 tensors, sum |w| 1234.567890
"""

import os
import sys
import time

import torch

import tandem

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pytorch_grpo"))
from policy import BOS, CHARSET, EOS, FIRST, encode, init_policy, logits_of, reward_of  # noqa: E402


def prompt_of(task, group):
    """The prompt of a group: random digits from a generator seeded by the group's index."""
    g = torch.Generator().manual_seed(task["seed"] * 1000003 + group)
    length = int(torch.randint(task["min_length"], task["max_length"] + 1, (1,), generator=g))
    digits = "".join(str(int(x)) for x in torch.randint(0, 10, (length,), generator=g))
    return [BOS] + encode(digits + "=")


@torch.no_grad()
def sample(state, m, prompts, max_new, temperature):
    """Completions (stopping at eos) and their log-probs, all sequences in one batch."""
    seqs = [list(p) for p in prompts]
    done = [False] * len(seqs)
    out = [[] for _ in seqs]
    lps = [[] for _ in seqs]
    for _ in range(max_new):
        width = max(len(s) for s in seqs)
        tokens = torch.zeros(len(seqs), width, dtype=torch.long)
        for i, s in enumerate(seqs):
            tokens[i, : len(s)] = torch.tensor(s)
        logits = logits_of(state, m, tokens)
        last = logits[torch.arange(len(seqs)), torch.tensor([len(s) - 1 for s in seqs])]
        logp = torch.log_softmax(last / temperature, dim=-1)
        picks = torch.multinomial(logp.exp(), 1).squeeze(1)
        for i, t in enumerate(picks.tolist()):
            if done[i]:
                continue
            seqs[i].append(t)
            out[i].append(t)
            lps[i].append(float(logp[i, t]))
            done[i] = t == EOS
        if all(done):
            break
    return out, lps


def main():
    rt = tandem.runtime()
    spec = rt.spec
    m, alg, task = spec["model"], spec["algorithm"], spec["task"]
    torch.set_num_threads(1)
    torch.manual_seed(os.getpid())
    me = int(rt.actor.rsplit("-", 1)[1])
    replicas = spec["rollout"]["replicas"]
    sampling = spec["rollout"]["sampling"]
    temperature = sampling["temperature"] or 1.0

    template = {k: v.detach() for k, v in init_policy(m, FIRST + len(CHARSET), 0).items()}
    reader = tandem.Reader(rt, template)
    state = reader.empty_state_dict()
    outbox = tandem.TrajectoryOutbox(rt)  # waits for the trainer's "trajectories" endpoint
    rt.log(f"reading layout {reader.layout.fingerprint_text}; prompts {me}, {me + replicas}, ... "
           f"of each step; trajectories {'over CURVE' if outbox.curve else 'in clear'}")
    last = -1
    batch = 0
    while not rt.cancelled:
        t0 = time.monotonic()
        try:
            info = reader.fetch_newer(last, into=state, timeout_s=2.0)
        except tandem.TandemError as e:
            if "deadline_exceeded" in str(e):
                continue  # no new version yet: look at cancellation, wait again
            raise
        fetch_s = time.monotonic() - t0
        last = info["version"]
        total = sum(float(t.abs().sum()) for t in state.values())
        rt.log(f"fetched version {last} (step {info['step']}, fence {info['fence']}) in "
               f"{fetch_s:.3f} s: {len(state)} tensors, sum |w| {total:.6f}")
        if info["step"] >= alg["steps"]:
            continue  # the last version: nothing left to generate for
        t_gen = time.monotonic()
        groups = [info["data_cursor"] + j for j in range(me, alg["prompts_per_step"], replicas)]
        prompts = [prompt_of(task, g) for g in groups for _ in range(alg["group_size"])]
        completions, logps = sample(state, m, prompts, sampling["max_new_tokens"], temperature)
        trajs = []
        for k, (p, c, lp) in enumerate(zip(prompts, completions, logps)):
            trajs.append({"p": p, "c": c, "lp": lp, "r": reward_of(task, p, c),
                          "g": groups[k // alg["group_size"]], "v": last})
        outbox.send({"rollout": me, "batch": batch, "version": last, "fence": info["fence"],
                     "rollout_s": time.monotonic() - t_gen, "weight_sync_wait_s": fetch_s,
                     "trainer_wait_s": 0.0, "fetch_s": fetch_s,
                     "generated_tokens": sum(len(c) for c in completions), "trajectories": trajs})
        batch += 1
        rt.progress(step=info["step"], version=last)
    return 0


if __name__ == "__main__":
    sys.exit(main())
