#!/usr/bin/python3
"""A GRPO trainer in plain PyTorch for Tandem's built-in C++ rollouts.

Run by a node agent as the job's trainer (job.yaml: `trainer: {command: [...]}`). It builds the
job's policy (the Llama-style decoder of `model:` with Hugging Face names, in the layout the
built-in rollouts read), warm-starts it on the task's answers as the built-in trainer does, then
for every step: takes prompts_per_step groups of trajectories from the rollouts through the SDK's
trajectory inbox, computes the clipped GRPO loss with importance ratios against the rollouts'
behaviour log-probs, steps AdamW and publishes the new weights as the next version through the
SDK's Publisher (numbered by the coordinator). Metrics go to the job like the built-in trainer's
(rollout/reward_mean, train/policy_loss, weights/version, ...), so `tandem job status`, `tandem
metrics` and the dashboard show them.

Built-in digit tasks only (reverse, sort, copy, add: the vocabulary below); see docs/python.md.
"""

import sys
import time

import torch

import tandem

from policy import CHARSET, FIRST, completion_logprobs, init_policy, warm_examples


def main():
    rt = tandem.runtime()
    spec = rt.spec
    m, alg, task = spec["model"], spec["algorithm"], spec["task"]
    if task["name"] not in ("reverse", "sort", "copy", "add") or m["init"] != "random":
        rt.fail(f"this example trains the built-in digit tasks from model.init: random "
                f"(got task {task['name']}, model.init {m['init']})")
        return 2
    torch.manual_seed(m["seed"])
    torch.set_num_threads(1)  # several actors share a node's cores
    temperature = spec["rollout"]["sampling"]["temperature"] or 1.0
    params = init_policy(m, FIRST + len(CHARSET), m["seed"])
    t0 = time.monotonic()
    opt = spec["algorithm"]["optimizer"]
    optim = torch.optim.AdamW(params.values(), lr=opt["lr"], betas=(opt["beta1"], opt["beta2"]),
                              eps=opt["eps"], weight_decay=opt["weight_decay"])

    # A restarted trainer (kill -9, a lost node: the agent starts it again as a new attempt)
    # goes on from its newest checkpoint when checkpoint.resume is auto (docs/python.md).
    checkpoints = tandem.Checkpoints(rt)
    resumed = checkpoints.latest()
    start_step = 0
    if resumed is not None:
        saved = resumed.state()
        with torch.no_grad():
            for k, v in params.items():
                v.copy_(saved["params"][k])
        optim.load_state_dict(saved["optimizer"])
        start_step = resumed.step
        rt.log(f"resumed from {resumed.path} at step {resumed.step} (version {resumed.version}, "
               f"data cursor {resumed.data_cursor}, attempt {rt.attempt})")
    else:
        warm_start(params, m, alg, task)
        rt.log(f"warm start: {alg['warm_start_steps']} supervised steps in "
               f"{time.monotonic() - t0:.1f} s")

    weights = {k: v.detach() for k, v in params.items()}  # views: always the current values
    publisher = tandem.Publisher(rt, weights)
    inbox = tandem.TrajectoryInbox(rt)  # announced as this actor's "trajectories"
    # A new attempt has a new fence: the same step gets a new number, above every number the
    # job had (at_least covers numbers a coordinator lost with its restart).
    info = publisher.publish_step(start_step, weights,
                                  data_cursor=start_step * alg["prompts_per_step"],
                                  at_least=resumed.version if resumed is not None else 0)
    fence = info["fence"]
    published = {info["version"]}
    rt.log(f"published version {info['version']} (fence {fence}), layout "
           f"{publisher.layout.fingerprint_text}; training steps {start_step + 1}..{alg['steps']}; "
           f"trajectories {'over CURVE' if inbox.curve else 'in clear'}")

    want = alg["prompts_per_step"] * alg["group_size"]
    staleness = spec["async"]["max_staleness"]
    carry = []
    for step in range(start_step + 1, alg["steps"] + 1):
        t_step = time.monotonic()
        trajs, rollout_versions, dropped = [], {}, 0
        pending = carry
        carry = []
        while len(trajs) < want:
            if rt.cancelled:
                rt.log("the job was cancelled")
                return 0
            for t in pending:
                ok = t["v"] in published and info["version"] - t["v"] <= staleness
                if not ok:
                    dropped += 1
                elif len(trajs) < want:
                    trajs.append(t)
                    rollout_versions[t["v"]] = rollout_versions.get(t["v"], 0) + 1
                else:
                    carry.append(t)
            b = inbox.next(timeout_s=0.2)
            if b is None:
                pending = []
                continue
            if b["fence"] != fence:  # another trainer run's rollouts
                dropped += len(b["trajectories"])
                pending = []
                continue
            pending = b["trajectories"]
        carry += pending  # arrived after the batch filled: judged again next step
        wait_s = time.monotonic() - t_step

        t_train = time.monotonic()
        rewards = torch.tensor([t["r"] for t in trajs], dtype=torch.float64)
        groups = {}
        for i, t in enumerate(trajs):
            groups.setdefault(t["g"], []).append(i)
        adv = torch.zeros(len(trajs), dtype=torch.float64)
        for idx in groups.values():
            r = rewards[idx]
            adv[idx] = (r - r.mean()) / (r.std(unbiased=False) + 1e-6)
        logps = completion_logprobs(params, m, [t["p"] for t in trajs], [t["c"] for t in trajs],
                                    temperature)
        tokens = sum(len(t["c"]) for t in trajs)
        loss, clipped, max_ratio_err = 0.0, 0, 0.0
        for lp, t, a in zip(logps, trajs, adv.float()):
            behaviour = torch.tensor(t["lp"], dtype=torch.float32)
            ratio = torch.exp(lp - behaviour)
            if t["v"] == info["version"]:  # on-policy: the ratio is 1 up to float rounding
                max_ratio_err = max(max_ratio_err, float((ratio.detach() - 1).abs().max()))
            clip = ratio.clamp(1 - alg["clip_eps"], 1 + alg["clip_eps"])
            loss = loss - torch.minimum(ratio * a, clip * a).sum()
            clipped += int(((ratio - clip).abs() > 0).sum())
        loss = loss / tokens
        optim.zero_grad()
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(
            params.values(), opt["grad_clip"] if opt["grad_clip"] > 0 else float("inf"))
        optim.step()
        train_s = time.monotonic() - t_train

        t_pub = time.monotonic()
        info = publisher.publish_step(step, weights, data_cursor=step * alg["prompts_per_step"])
        published.add(info["version"])
        publish_s = time.monotonic() - t_pub
        reward = float(rewards.mean())
        rt.metrics(step, {
            "rollout/reward_mean": reward,
            "rollout/reward_min": float(rewards.min()),
            "rollout/reward_max": float(rewards.max()),
            "train/policy_loss": float(loss),
            "train/grad_norm": float(grad_norm),
            "train/tokens": tokens,
            "train/clip_fraction": clipped / tokens,
            "train/onpolicy_ratio_error": max_ratio_err,
            "weights/version": info["version"],
            "weights/fence_trainer_epoch": info["fence"]["trainer_epoch"],
            "trainer/attempt": rt.attempt,
            "weights/consumed_version_min": min(rollout_versions),
            "weights/consumed_version_max": max(rollout_versions),
            "weights/dropped_trajectories": dropped,
            "trajectories/refused_total": inbox.refused,
            "timing_s/trajectory_wait": wait_s,
            "timing_s/train": train_s,
            "timing_s/publish": publish_s,
            "timing_s/step": time.monotonic() - t_step,
        })
        rt.progress(step=step, fraction=step / alg["steps"], reward=reward)
        if checkpoints.due(step):
            path = checkpoints.save(step, info, {
                "params": {k: v.detach().clone() for k, v in params.items()},
                "optimizer": optim.state_dict()})
            rt.log(f"checkpoint {path}")
        if step == 1 or step % 10 == 0 or step == alg["steps"]:
            rt.log(f"step {step}: reward {reward:.3f}, loss {float(loss):.4f}, "
                   f"rollout versions {sorted(rollout_versions)}, on-policy ratio error "
                   f"{max_ratio_err:.2e}, published version {info['version']}")
    rt.log(f"trained steps {start_step + 1}..{alg['steps']} in {time.monotonic() - t0:.1f} s")
    return 0


def warm_start(params, m, alg, task):
    """Supervised steps on the task's answers (the built-in trainer's
    algorithm.warm_start_steps at warm_start_lr): the result becomes version 0."""
    rng = torch.Generator().manual_seed(task["seed"] + 1)
    batch = alg["prompts_per_step"] * alg["group_size"]
    warm = torch.optim.AdamW(params.values(), lr=alg["warm_start_lr"], betas=(0.9, 0.99),
                             weight_decay=0.0)
    for _ in range(alg["warm_start_steps"]):
        prompts, answers = warm_examples(task, batch, rng)
        logps = completion_logprobs(params, m, prompts, answers)
        loss = -torch.cat(logps).mean()
        warm.zero_grad()
        loss.backward()
        warm.step()


if __name__ == "__main__":
    sys.exit(main())
