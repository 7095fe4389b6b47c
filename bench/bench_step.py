"""Time one full-batch training step: scidl's last-position step vs a plain full-forward reference.

Usage: python bench/bench_step.py [--threads 2] [--steps 30] [--p 113]
Prints milliseconds per step for both and the speed-up ratio (reference / ours), same threads.
"""
from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F

from scidl.config import make_config
from scidl.train import configure_torch
from scidl.models import make_model
from scidl.tasks import make_dataset


def reference_logits(model, tokens: torch.Tensor) -> torch.Tensor:
    """Straightforward forward over all 3 positions (as in the paper's code), last position kept."""
    x = model.W_E[tokens] + model.W_pos  # (batch, 3, d_model)
    attn, mlp = model.blocks[0].attn, model.blocks[0].mlp
    q = torch.einsum("bpd,hde->bhpe", x, attn.W_Q)
    k = torch.einsum("bpd,hde->bhpe", x, attn.W_K)
    v = torch.einsum("bpd,hde->bhpe", x, attn.W_V)
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    mask = torch.tril(torch.ones(3, 3, dtype=torch.bool))
    pattern = scores.masked_fill(~mask, float("-inf")).softmax(-1)
    z = pattern @ v  # (batch, head, pos, d_head)
    x = x + torch.einsum("bhpe,hed->bpd", z, attn.W_O)
    x = x + F.relu(x @ mlp.W_in + mlp.b_in) @ mlp.W_out + mlp.b_out
    return (x @ model.W_U)[:, -1]


def time_steps(model, logits_fn, x, y, steps: int) -> float:
    """Return mean seconds per AdamW step (after 5 warm-up steps)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1.0, betas=(0.9, 0.98))
    for i in range(steps + 5):
        if i == 5:
            start = time.perf_counter()
        loss = F.cross_entropy(logits_fn(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--p", type=int, default=113)
    args = ap.parse_args()
    configure_torch(args.threads)  # both steps run under the same settings
    cfg = make_config(p=args.p)
    x, y = make_dataset(cfg.task).train
    model = make_model(cfg.model, cfg.task)
    with torch.no_grad():
        err = (model.last_logits(x) - reference_logits(model, x)).abs().max().item()
    assert err < 1e-4, f"fast path disagrees with the reference by {err}"
    model_ref = make_model(cfg.model, cfg.task)
    ref = time_steps(model_ref, lambda t: reference_logits(model_ref, t), x, y, args.steps)
    ours = time_steps(model, model.last_logits, x, y, args.steps)
    print(f"p={args.p} train pairs={len(x)} threads={args.threads} steps={args.steps}")
    print(f"reference (full forward): {ref * 1e3:.1f} ms/step")
    print(f"scidl (last position):    {ours * 1e3:.1f} ms/step")
    print(f"speedup = {ref / ours:.2f}x")


if __name__ == "__main__":
    main()
