"""Train K same-shape one-hot MLPs (any phenomenon's model with `W_in`, `W_out` and `onehot_rows`)
as one batched computation, each with its own lr, weight decay,
init scale, seed and train split; every member is stored as an ordinary run.

One hash, one result: each member sees only its own train pairs (the members' splits have the
same size, so they stack), and every operation is either elementwise or a per-member matmul, so a
member is bit-identical to the same config trained alone, which `train()` does with this engine
and K = 1 (tests/test_ensemble.py asserts it). The optimizer is torch's fused AdamW run on each
member's slices with its own lr/wd (StackedAdamW).
"""
from __future__ import annotations

import dataclasses
import math
import time

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from scidl.config import ConfigError, RunConfig
from scidl.models import ACTS
from scidl.progressbar import bar as progress_bar
from scidl.registry import PHENOMENA, make_dataset, make_model
from scidl.store import RunStore, as_store
from scidl.train import _now, cross_entropy, summarize_metrics

SHARED = ("arch", "d_mlp", "act", "n_layers")  # model fields that must agree across members


def task_key(task) -> tuple:
    """Return what members' tasks must share to stack: kind, every field but the split's
    (frac_train, data_seed), and the train-split size."""
    fields = {k: v for k, v in dataclasses.asdict(task).items() if k not in ("frac_train", "data_seed")}
    return (task.kind, tuple(sorted(fields.items())), task.n_train)


def can_batch(configs: list[RunConfig]) -> bool:
    """Return whether `configs` can be trained as one ensemble (one-hot MLPs of one shape, full batch,
    one task up to its split, same train-split size and steps)."""
    if not configs or not all(isinstance(c, RunConfig) for c in configs):
        return False
    first = configs[0]
    same = lambda c: (c.model.arch == "mlp" and "mlp" in PHENOMENA[c.task.kind].archs and not c.train.batch_size
                      and PHENOMENA[c.task.kind].one_hot_mlp and not c.train.masked and not c.train.adversarial
                      and task_key(c.task) == task_key(first.task)
                      and all(getattr(c.model, f) == getattr(first.model, f) for f in SHARED)
                      and c.train.steps == first.train.steps and c.train.eval_every == first.train.eval_every
                      and c.train.warmup_steps == first.train.warmup_steps
                      and c.train.loss_dtype == first.train.loss_dtype)
    return all(same(c) for c in configs)


def _stack(configs: list[RunConfig]) -> tuple[Tensor, Tensor, torch.nn.Module]:
    """Return the members' stacked W_in (K, rows, d_mlp) and W_out (K, d_mlp, answers), and the first model."""
    models = [make_model(c.model, c.task, seed=c.train.seed) for c in configs]
    W_in = torch.stack([m.W_in.detach() for m in models]).requires_grad_(True)
    W_out = torch.stack([m.W_out.detach() for m in models]).requires_grad_(True)
    return W_in, W_out, models[0]


class StackedAdamW:
    """AdamW on stacked (K, ...) tensors with per-member lr, weight decay and betas: torch's fused CPU
    kernel (`torch.optim.AdamW(fused=True)`, which `train` uses too) run on each member's slices, so a
    member's update is the same bits whatever K is, and its square root is ATen's exact one (not MKL's
    vector math, whose bits follow the CPU vendor: scidl._numerics)."""

    def __init__(self, params: list[Tensor], configs: list[RunConfig]) -> None:
        self.params, self.t = params, 0
        self.lr = [float(c.train.lr) for c in configs]
        self.wd = [float(c.train.weight_decay) for c in configs]
        self.betas = [(float(c.train.beta1), float(c.train.beta2)) for c in configs]
        self.warmup = max(configs[0].train.warmup_steps, 1)
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.step_count = torch.zeros((), dtype=torch.float32)  # read by the kernel, once per param

    @torch.no_grad()
    def step(self, active: Tensor) -> None:
        """Update members where `active` (K,) is True; others are frozen (weights and moments)."""
        factor = min((self.t + 1) / self.warmup, 1.0)  # LambdaLR's linear warm-up, as in train
        self.t += 1
        self.step_count.fill_(self.t)
        grads = [p.grad for p in self.params]
        for k in torch.nonzero(active).flatten().tolist():
            beta1, beta2 = self.betas[k]
            torch._fused_adamw_([p[k] for p in self.params], [g[k] for g in grads],
                                [m[k] for m in self.m], [v[k] for v in self.v], [],
                                [self.step_count] * len(self.params),
                                lr=self.lr[k] * factor, beta1=beta1, beta2=beta2,
                                weight_decay=self.wd[k], eps=1e-8, amsgrad=False, maximize=False)
        for p in self.params:
            p.grad = None


def _metrics(logits: Tensor, labels: Tensor, masks: Tensor, params: list[Tensor], loss_dtype: str) -> list[dict]:
    ce = cross_entropy(logits, labels.expand(len(masks), -1), loss_dtype, reduction="none")  # (K, n)
    correct = (logits.argmax(-1) == labels).float()  # (K, n)
    squares = sum(p.detach().square().flatten(1).sum(1) for p in params)  # (K,): math.sqrt below, not
    # torch.sqrt, which is MKL's vector math (its bits follow the CPU vendor: scidl._numerics)
    rows = []
    for k, mask in enumerate(masks):
        rows.append({"train_loss": float(ce[k][mask].mean()), "train_acc": float(correct[k][mask].mean()),
                     "test_loss": float(ce[k][~mask].mean()), "test_acc": float(correct[k][~mask].mean()),
                     "weight_norm": math.sqrt(float(squares[k]))})
    return rows


class _PairSum(torch.autograd.Function):
    """table[rows[:, 0]] + table[rows[:, 1]], whose backward adds each sample's gradient to its rows
    in sample order. embedding_bag's own backward sums in an order that depends on the table's
    size, so a member of K would differ in the last bits from the same member trained alone."""

    @staticmethod
    def forward(ctx, rows: Tensor, table: Tensor) -> Tensor:
        ctx.save_for_backward(rows)
        ctx.n_rows = table.shape[0]
        return F.embedding_bag(rows, table, mode="sum")  # (N, d)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor]:
        (rows,) = ctx.saved_tensors
        table_grad = grad.new_zeros(ctx.n_rows, grad.shape[1])
        table_grad.index_add_(0, rows[:, 0], grad)
        table_grad.index_add_(0, rows[:, 1], grad)
        return None, table_grad


def _member_rows(model, tokens: Tensor, K: int) -> Tensor:
    """Return (K, n, 2) rows of the flattened (K * rows, d_mlp) first layers: member k's own rows of
    each pair (`model.onehot_rows`), offset by k tables."""
    offset = (torch.arange(K) * model.W_in.shape[0]).view(K, 1, 1)
    return model.onehot_rows(tokens) + offset


def train_ensemble(configs: list[RunConfig], store: RunStore | None = None, progress: bool = True) -> None:
    """Train every config of a batchable group together and commit each member to the store."""
    if not isinstance(configs, (list, tuple)) or not configs:
        raise ConfigError(f"configs={configs!r} is not allowed: must be a non-empty list of RunConfigs")
    hashes = [getattr(c, "hash", c) for c in configs]
    if len(set(hashes)) != len(hashes):
        raise ConfigError(f"configs={hashes!r} is not allowed: each config may appear once (one hash, one run)")
    if not can_batch(configs):
        raise ConfigError(f"configs={hashes!r} is not allowed: "
                          f"ensemble members must be RunConfigs that share an MLP shape, task (up to its split), "
                          f"train-split size, steps, eval_every and warmup_steps (see ensemble.can_batch)")
    store, start, started_at, K = as_store(store), time.perf_counter(), _now(), len(configs)
    first = configs[0]
    datasets = [make_dataset(c.task) for c in configs]
    tokens, labels = datasets[0].tokens, datasets[0].labels  # every member's pairs, same order
    masks = torch.stack([d.is_train for d in datasets])  # (K, n)
    W_in, W_out, model = _stack(configs)
    x = _member_rows(model, torch.stack([d.train[0] for d in datasets]), K)  # (K, n_train, 2)
    y = torch.stack([d.train[1] for d in datasets])  # (K, n_train)
    everything = _member_rows(model, tokens.expand(K, -1, -1), K)  # (K, n, 2) for evaluation
    opt, act = StackedAdamW([W_in, W_out], configs), ACTS[first.model.act]

    def forward(rows: Tensor) -> Tensor:
        # all members' first layers stacked as one (K*2p, d_mlp) table: each member sums its own rows
        pre = _PairSum.apply(rows.flatten(0, 1), W_in.flatten(0, 1))  # (K*n, d_mlp)
        return torch.bmm(act(pre.view(K, rows.shape[1], -1)), W_out)  # (K, n, p)

    works = [store.begin(c) for c in configs]
    rows: list[list[dict]] = [[] for _ in configs]
    diverged: list[int | None] = [None] * K
    active = torch.ones(K, dtype=torch.bool)
    bar = progress_bar(total=first.train.steps, progress=progress,  # counts optimizer steps done
                       desc=f"run {first.hash}" if K == 1 else f"ensemble of {K}")
    for step in range(first.train.steps + 1):
        if step % first.train.eval_every == 0 or step == first.train.steps:
            with torch.no_grad():
                for k, row in enumerate(_metrics(forward(everything), labels, masks, [W_in, W_out],
                                                 first.train.loss_dtype)):
                    if active[k]:
                        rows[k].append({"step": step, **row})
        if step in (0, first.train.steps) or any(c.train.is_checkpoint(step) for c in configs):
            _save_members(works, configs, step, W_in, W_out, active)
        if step == first.train.steps:
            break
        member_loss = cross_entropy(forward(x), y, first.train.loss_dtype, reduction="none").mean(1)  # (K,)
        finite = torch.isfinite(member_loss)
        for k in torch.nonzero(active & ~finite).flatten().tolist():
            diverged[k] = step
            rows[k].append({"step": step, "train_loss": float(member_loss[k].detach()),
                            "weight_norm": float("nan")})
        active &= finite
        if not active.any():
            break
        torch.where(active, member_loss, torch.zeros_like(member_loss)).sum().backward()
        opt.step(active)
        bar.update()
    bar.close()
    seconds = time.perf_counter() - start
    for k, (cfg, work) in enumerate(zip(configs, works)):
        metrics = pd.DataFrame(rows[k])
        store.commit(work, metrics, {**summarize_metrics(metrics, diverged[k], seconds / K, started_at),
                                     "trained_in": f"ensemble of {K}"})


def _save_members(works, configs, step, W_in, W_out, active) -> None:
    from scidl.store import save_checkpoint

    for k, (cfg, work) in enumerate(zip(configs, works)):
        if active[k] and (cfg.train.is_checkpoint(step) or step == 0):
            model = make_model(cfg.model, cfg.task, seed=cfg.train.seed)
            with torch.no_grad():
                model.W_in.copy_(W_in[k])
                model.W_out.copy_(W_out[k])
            save_checkpoint(work, step, model)
