"""AdamW training of any registered phenomenon (full batch or minibatches) with periodic evaluation,
checkpoints and divergence detection."""
from __future__ import annotations

import ctypes
import math
import time
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F

from scidl.config import ConfigError, RunConfig
from scidl.errors import check_choice, check_int
from scidl.progressbar import bar as progress_bar
from scidl.registry import get_phenomenon, phenomenon_of
from scidl import attacks, masks
from scidl.store import Run, RunStore, StoreError, as_store, code_version, save_checkpoint


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite; the run was stopped and stored as diverged."""


def configure_torch(threads: int = 2) -> None:
    """Use `threads` intra-op threads and deterministic kernels (bit-reproducible runs), and let
    malloc reuse freed tensor memory (`keep_freed_memory`).

    Deterministic mode also fills every new uninitialised tensor with NaN, a debugging aid that
    costs ~10 ms per p=113 training step (98 fills) and changes no result: no kernel here reads
    memory it has not written (the tests compare every path with a reference). It is turned off.
    """
    threads = check_int("threads", threads, 1, 1024, error=ConfigError)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = False
    keep_freed_memory()


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to serve tensors of up to 32 MB from its heap and keep freed memory, instead
    of mapping fresh pages for every large tensor and returning them at once. A training step
    allocates the same few-MB activations every time; fresh pages cost ~2,800 page faults per step
    at p=113 (a few ms of kernel time). No value changes. Returns False where libc is not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    return bool(mallopt(M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))


def weight_norm(model: torch.nn.Module) -> float:
    """Return the L2 norm of all parameters taken together."""
    return math.sqrt(sum(float(p.detach().square().sum()) for p in model.parameters()))


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, dtype: str = "float64",
                  reduction: str = "mean") -> torch.Tensor:
    """Return the cross-entropy of `logits` (..., n_classes) with a log-softmax taken in `dtype`.

    float64 is Nanda et al.'s `cross_entropy_high_precision`: in float32, log-softmax rounds the
    correct class's log-probability to 0 once the loss nears 1e-7, so loss and gradient degrade.
    """
    logprobs = logits.to(getattr(torch, dtype)).log_softmax(dim=-1)
    nll = -logprobs.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    return nll.mean() if reduction == "mean" else nll


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def split_metrics(logits: torch.Tensor, data, loss_dtype: str = "float64") -> dict[str, float]:
    """Return train/test loss and accuracy of `logits` (one row per row of `data`, in its order; with
    several answers per row, loss and accuracy are means over all answer tokens)."""
    out = {}
    for split, mask in (("train", data.is_train), ("test", ~data.is_train)):
        out[f"{split}_loss"] = float(cross_entropy(logits[mask], data.labels[mask], loss_dtype))
        out[f"{split}_acc"] = float((logits[mask].argmax(-1) == data.labels[mask]).float().mean())
    return out


@torch.no_grad()
def evaluate(model: torch.nn.Module, data, loss_dtype: str = "float64") -> dict[str, float]:
    """Return one metrics row of `model` on `data`: train/test loss and accuracy and whatever else
    the data's phenomenon measures (its `evaluate`)."""
    return get_phenomenon(data.kind).evaluate(model, data, loss_dtype)


def minibatches(n: int, batch_size: int, seed: int):
    """Yield index tensors of `batch_size` rows out of n, a fresh seeded permutation per epoch (the
    last incomplete batch of an epoch is dropped, so every step sees the same number of rows)."""
    gen = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(n, generator=gen)
        for i in range(0, n - batch_size + 1, batch_size):
            yield order[i:i + batch_size]


def make_optimizer(model: torch.nn.Module, cfg: RunConfig):
    """Return AdamW with the configured betas and a linear warm-up schedule.

    torch's fused CPU kernel: the same update, its square root exact and vectorised in ATen, where the
    unfused AdamW's `sqrt` goes through MKL's vector math, whose bits differ between Intel and AMD
    CPUs even on MKL's COMPATIBLE branch (scidl._numerics)."""
    t = cfg.train
    opt = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay,
                            betas=(t.beta1, t.beta2), fused=True)
    warm = max(t.warmup_steps, 1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warm, 1.0))
    return opt, sched


def train(cfg: RunConfig, store: RunStore | None = None, progress: bool = True,
          on_divergence: str = "raise") -> Run:
    """Train `cfg` (or load it if the store already holds it) and return the finished Run.

    on_divergence: "raise" raises TrainingDiverged after storing the run; "stop" only stores it.
    A damaged or incomplete run folder is set aside (StoreWarning) and the run trained once more.
    Full-batch one-hot MLPs are trained by the batched engine (ensemble.train_ensemble with one
    member), so a run is the same bits whether a sweep batched it with others or not.
    """
    check_choice("on_divergence", on_divergence, ("raise", "stop"), error=ConfigError)
    if not isinstance(cfg, RunConfig):
        raise ConfigError(f"cfg={cfg!r} is not allowed: must be a RunConfig (see scidl.make_config)")
    store = as_store(store)
    if not store.has(cfg):
        if (store.path(cfg) / "summary.json").exists():  # there, but damaged: say why, retrain once
            try:
                store.load(cfg)
            except StoreError as e:
                store.set_aside(cfg.hash, str(e))
        from scidl.ensemble import can_batch, train_ensemble

        if can_batch([cfg]):  # a one-hot MLP on the full batch, unpruned
            train_ensemble([cfg], store, progress=progress)
        else:
            _train_into(cfg, store, progress)
    run = store.load(cfg)
    if run.summary["status"] == "diverged" and on_divergence == "raise":
        raise TrainingDiverged(f"run {run.hash}: loss became non-finite at step "
                               f"{run.summary['diverged_step']} (lr={cfg.train.lr}); "
                               f"stored as diverged in {run.path}")
    return run


def _train_into(cfg: RunConfig, store: RunStore, progress: bool) -> None:
    phenomenon = phenomenon_of(cfg.task)
    data = phenomenon.make_dataset(cfg.task)  # first, as always: the model's seeding comes after it
    init_seed = cfg.train.init_seed if cfg.train.init_seed >= 0 else cfg.train.seed
    model = phenomenon.make_model(cfg.model, cfg.task, seed=init_seed)
    init, mask = masks.resolve(cfg, store, model)  # parents read (and refused) before anything is written
    if init is not None:
        model.load_state_dict(init)
    masker = masks.Masker(model, mask) if mask is not None else None
    adversary = _adversary(cfg, data)  # refused before anything is written where inputs are not floats
    opt, sched = make_optimizer(model, cfg)
    work, rows, start, started_at = store.begin(cfg), [], time.perf_counter(), _now()
    if mask is not None:
        masks.save_mask(work, mask)
    x, y = data.train
    batches = minibatches(len(x), cfg.train.batch_size, cfg.train.seed) if cfg.train.batch_size else None
    diverged_step = None
    bar = progress_bar(total=cfg.train.steps, desc=f"run {cfg.hash}", progress=progress)  # optimizer steps
    for step in range(cfg.train.steps + 1):
        if step % cfg.train.eval_every == 0 or step == cfg.train.steps:
            rows.append({"step": step, **evaluate(model, data, cfg.train.loss_dtype),
                         "weight_norm": weight_norm(model)})
            bar.set_postfix(train_acc=rows[-1]["train_acc"], test_acc=rows[-1]["test_acc"],
                            refresh=False)
        if step in (0, cfg.train.steps) or cfg.train.is_checkpoint(step):
            save_checkpoint(work, step, model)
        if step == cfg.train.steps:
            break
        idx = next(batches) if batches is not None else None
        xb, yb = (x, y) if idx is None else (x[idx], y[idx])
        if adversary is not None:  # the step trains on PGD examples of its batch (Madry et al. 2018)
            attack, bounds = adversary
            xb = attacks.perturb(model, xb, yb, replace(attack, seed=(cfg.train.seed * 1_000_003 + step) % 2**31), bounds)
        loss = phenomenon.loss(model, xb, yb, cfg.train.loss_dtype)
        if not torch.isfinite(loss):
            diverged_step = step
            rows.append({"step": step, "train_loss": loss.item(), "weight_norm": weight_norm(model)})
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if masker is not None:  # pruned weights stay exactly zero (weight decay and Adam's moments aside)
            masker.after_step()
        sched.step()
        bar.update()
    bar.close()
    metrics = pd.DataFrame(rows)
    store.commit(work, metrics, summarize_metrics(metrics, diverged_step, time.perf_counter() - start,
                                                  started_at))


def _adversary(cfg: RunConfig, data):
    """Return (the PGD attack, the data's observed range) of an adversarially trained run, else None;
    ConfigError naming adv_eps where the task's inputs are not floats (tokens cannot be perturbed)."""
    t = cfg.train
    if not t.adversarial:
        return None
    if not data.tokens.is_floating_point():
        raise ConfigError(f"TrainConfig.adv_eps={t.adv_eps} is not allowed for a {cfg.task.kind} task: its inputs are "
                          f"{data.tokens.dtype} tokens, and adversarial training perturbs float inputs")
    attack = attacks.pgd(t.adv_eps, t.adv_steps, t.adv_norm, step_size=t.adv_step_size, random_start=True)
    return attack, (float(data.tokens.min()), float(data.tokens.max()))


def summarize_metrics(metrics: pd.DataFrame, diverged_step: int | None, seconds: float,
                      started_at: str) -> dict[str, Any]:
    """Return a run's summary: status, divergence step, steps run, seconds, start and end times
    (UTC, so evidence can be checked against a hypothesis' registration), code version and the
    final metrics."""
    last = metrics.iloc[-1].to_dict()
    final = {f"final_{k}": (None if pd.isna(v) else float(v)) for k, v in last.items() if k != "step"}
    return {"status": "diverged" if diverged_step is not None else "finished",
            "diverged_step": diverged_step, "steps_run": int(last["step"]),
            "train_seconds": round(seconds, 3), "started_at": started_at, "finished_at": _now(),
            "code_version": code_version(), **final}
