"""The default task's policy in plain PyTorch: the Llama-style decoder of a job's `model:` as a
dict of Hugging Face-named tensors, in the order of common/model/params.h (the layout the
built-in C++ actors publish and read), and the built-in digit tasks' tokens. Shared by
examples/pytorch_grpo/train.py and examples/python_rollout/rollout.py.
"""

import math

import torch
import torch.nn.functional as F

CHARSET = "0123456789+="  # model::Vocabulary::builtin(): pad 0, bos 1, eos 2, then these
PAD, BOS, EOS, FIRST = 0, 1, 2, 3


# ---- the policy: a Llama decoder over a dict of Hugging Face-named tensors ----

def policy_names(m):
    """Names in the order of common/model/params.h (the layout the rollouts read)."""
    names = ["model.embed_tokens.weight"]
    for i in range(m["num_layers"]):
        p = f"model.layers.{i}."
        names += [p + "input_layernorm.weight"]
        names += [p + f"self_attn.{x}_proj.weight" for x in "qkvo"]
        names += [p + "post_attention_layernorm.weight"]
        names += [p + f"mlp.{x}_proj.weight" for x in ("gate", "up", "down")]
    names.append("model.norm.weight")
    if not m["tie_embeddings"]:
        names.append("lm_head.weight")
    return names


def init_policy(m, vocab, seed):
    g = torch.Generator().manual_seed(seed)
    h, inter = m["hidden_size"], m["intermediate_size"]
    d = h // m["num_heads"]
    q_dim, kv_dim = m["num_heads"] * d, m["num_kv_heads"] * d
    shapes = {"embed_tokens": (vocab, h), "q_proj": (q_dim, h), "k_proj": (kv_dim, h),
              "v_proj": (kv_dim, h), "o_proj": (h, q_dim), "gate_proj": (inter, h),
              "up_proj": (inter, h), "down_proj": (h, inter), "lm_head": (vocab, h)}
    params = {}
    for name in policy_names(m):
        if name.endswith("norm.weight"):
            params[name] = torch.ones(h)
            continue
        shape = next(s for k, s in shapes.items() if k in name)
        params[name] = torch.randn(shape, generator=g) * (1.0 / math.sqrt(shape[1]))
    return {k: v.requires_grad_() for k, v in params.items()}


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope(x, theta):
    """Hugging Face's rotate-half RoPE; x [B, heads, T, D]."""
    t, d = x.shape[-2], x.shape[-1]
    inv = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    ang = torch.arange(t, dtype=torch.float64)[:, None] * inv[None, :]
    cos = torch.cat([ang.cos(), ang.cos()], -1).float()
    sin = torch.cat([ang.sin(), ang.sin()], -1).float()
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return x * cos + torch.cat([-x2, x1], -1) * sin


def logits_of(p, m, tokens):
    """tokens [B, T] -> logits [B, T, vocab] (causal; right padding does not reach real tokens)."""
    b, t = tokens.shape
    heads, kv = m["num_heads"], m["num_kv_heads"]
    d = m["hidden_size"] // heads
    eps, theta = m["rms_norm_eps"], m["rope_theta"]
    x = p["model.embed_tokens.weight"][tokens]
    for i in range(m["num_layers"]):
        pre = f"model.layers.{i}."
        h = rms_norm(x, p[pre + "input_layernorm.weight"], eps)
        q = (h @ p[pre + "self_attn.q_proj.weight"].T).view(b, t, heads, d).transpose(1, 2)
        k = (h @ p[pre + "self_attn.k_proj.weight"].T).view(b, t, kv, d).transpose(1, 2)
        v = (h @ p[pre + "self_attn.v_proj.weight"].T).view(b, t, kv, d).transpose(1, 2)
        q, k = rope(q, theta), rope(k, theta)
        k = k.repeat_interleave(heads // kv, dim=1)
        v = v.repeat_interleave(heads // kv, dim=1)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(d)
        causal = torch.ones(t, t, dtype=torch.bool).triu(1)
        a = torch.softmax(scores.masked_fill(causal, float("-inf")), dim=-1) @ v
        x = x + a.transpose(1, 2).reshape(b, t, heads * d) @ p[pre + "self_attn.o_proj.weight"].T
        h = rms_norm(x, p[pre + "post_attention_layernorm.weight"], eps)
        gate = F.silu(h @ p[pre + "mlp.gate_proj.weight"].T)
        x = x + (gate * (h @ p[pre + "mlp.up_proj.weight"].T)) @ p[pre + "mlp.down_proj.weight"].T
    x = rms_norm(x, p["model.norm.weight"], eps)
    head = p.get("lm_head.weight", p["model.embed_tokens.weight"])
    return x @ head.T


def completion_logprobs(p, m, prompts, completions, temperature=1.0):
    """Log-probs of each completion token under the policy: a list of 1-D tensors."""
    seqs = [pr + c for pr, c in zip(prompts, completions)]
    width = max(len(s) for s in seqs)
    tokens = torch.full((len(seqs), width), PAD, dtype=torch.long)
    for i, s in enumerate(seqs):
        tokens[i, : len(s)] = torch.tensor(s)
    logp = torch.log_softmax(logits_of(p, m, tokens) / temperature, dim=-1)
    out = []
    for i, (pr, c) in enumerate(zip(prompts, completions)):
        pos = torch.arange(len(pr) - 1, len(pr) - 1 + len(c))
        out.append(logp[i, pos, torch.tensor(c, dtype=torch.long)])
    return out


# ---- the task's answers, for the supervised warm start ----

def encode(text):
    return [FIRST + CHARSET.index(ch) for ch in text]


def warm_examples(task, n, rng):
    """Prompts and answers of the built-in digit tasks (their own random stream: the warm start
    only needs the task's format, not the rollouts' prompts)."""
    prompts, answers = [], []
    for _ in range(n):
        length = int(torch.randint(task["min_length"], task["max_length"] + 1, (1,), generator=rng))
        if task["name"] == "add":
            a = int(torch.randint(0, 10 ** length, (1,), generator=rng))
            b = int(torch.randint(0, 10 ** length, (1,), generator=rng))
            prompt, answer = f"{a}+{b}=", str(a + b)[::-1]
        else:
            digits = "".join(str(int(x)) for x in torch.randint(0, 10, (length,), generator=rng))
            prompt = digits + "="
            answer = {"reverse": digits[::-1], "sort": "".join(sorted(digits)),
                      "copy": digits}[task["name"]]
        prompts.append([BOS] + encode(prompt))
        answers.append(encode(answer) + [EOS])
    return prompts, answers


def reward_of(task, prompt, completion):
    """The positional verifier of the digit tasks: the fraction of answer positions right (the
    completion up to eos against the answer of the prompt)."""
    text = "".join(CHARSET[t - FIRST] for t in prompt[1:] if t >= FIRST)[:-1]  # drop "="
    if task["name"] == "add":
        a, b = text.split("+")
        answer = str(int(a) + int(b))[::-1]
    else:
        answer = {"reverse": text[::-1], "sort": "".join(sorted(text)), "copy": text}[task["name"]]
    got = []
    for t in completion:
        if t == EOS or t < FIRST:
            break
        got.append(CHARSET[t - FIRST])
    right = sum(1 for x, y in zip(got, answer) if x == y)
    return right / max(len(answer), len(got), 1)
