"""Time one full-batch training step: scidl's step vs a plain full-forward reference, and the
matmul-bound limit, all measured in this run on this machine.

Usage: python bench/bench_step.py [--threads 2] [--steps 30] [--p 113]
Prints `reference_ms` (the plain all-positions step, float64 loss, torch's AdamW), `scidl_ms` (what
`scidl.train` runs: `scidl.phenomena.grokking.step.last_position_loss`), `step_speedup` (reference / scidl) and
`limit_ms`, the time of just the matrix products an exact last-position step needs (same shapes,
same threads), with `scidl_over_limit`. Both steps run under `configure_torch` and are first
checked to compute the same loss and gradients.
"""
from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F

from scidl.config import make_config
from scidl.registry import make_model
from scidl.phenomena.grokking.step import last_position_loss
from scidl.phenomena.grokking.task import make_dataset
from scidl.train import configure_torch, cross_entropy


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


def time_steps(model, loss_fn, steps: int) -> float:
    """Return mean seconds per AdamW step (after 5 warm-up steps)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1.0, betas=(0.9, 0.98))
    for i in range(steps + 5):
        if i == 5:
            start = time.perf_counter()
        loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - start) / steps


def matmul_limit(n: int, d: int, d_mlp: int, p: int, steps: int) -> float:
    """Return seconds for the matrix products of one exact last-position step on n pairs: forward
    z@W_O, x@W_in, post@W_out, r@W_U; backward the two products of each (weights and inputs)."""
    g = torch.Generator().manual_seed(0)
    x, post, out = torch.randn(n, d, generator=g), torch.randn(n, d_mlp, generator=g), torch.randn(n, p, generator=g)
    W_O, W_in, W_out, W_U = (torch.randn(*s, generator=g) for s in ((d, d), (d, d_mlp), (d_mlp, d), (d, p)))

    def products() -> None:
        x @ W_O, x @ W_in, post @ W_out, x @ W_U  # forward
        x.T @ out, out @ W_U.T, post.T @ x, x @ W_out.T, x.T @ post, post @ W_in.T, x.T @ x, x @ W_O.T

    for _ in range(3):
        products()
    start = time.perf_counter()
    for _ in range(steps):
        products()
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
    model, model_ref = make_model(cfg.model, cfg.task), make_model(cfg.model, cfg.task)
    ours_fn = lambda: last_position_loss(model, x, y)
    ref_fn = lambda: cross_entropy(reference_logits(model_ref, x), y)
    ours_fn().backward()
    ref_fn().backward()
    for (name, a), b in zip(model.named_parameters(), model_ref.parameters()):
        err = float((a.grad - b.grad).abs().max() / b.grad.abs().max())
        assert err < 1e-4, f"scidl's step disagrees with the reference on d loss / d {name} by {err:.2g}"
    ref = time_steps(model_ref, ref_fn, args.steps)
    ours = time_steps(model, ours_fn, args.steps)
    m = cfg.model
    limit = matmul_limit(len(x), m.d_model, m.d_mlp, args.p, args.steps)
    print(f"p={args.p} train pairs={len(x)} threads={args.threads} steps={args.steps} "
          f"(same loss and gradients checked first)")
    print(f"reference_ms = {ref * 1e3:.1f}  # plain all-positions step")
    print(f"scidl_ms = {ours * 1e3:.1f}")
    print(f"step_speedup = {ref / ours:.2f}")
    print(f"limit_ms = {limit * 1e3:.1f}  # only the matrix products, measured now")
    print(f"scidl_over_limit = {ours / limit:.2f}")


if __name__ == "__main__":
    main()
