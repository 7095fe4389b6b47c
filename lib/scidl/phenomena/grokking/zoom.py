"""Grokking's zoom views: Fourier ablations of the embedding (with their random and energy
controls), patching components at '=', and the explorer's view of one checkpoint."""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from torch import Tensor

from scidl.errors import ScidlError, check_int, not_allowed
from scidl.interventions import InterventionError, loss
from scidl.phenomena.grokking import circuits, fourier
from scidl.phenomena.grokking.model import embedding_matrix
from scidl.phenomena.grokking.task import is_prime

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _int(name: str, value: Any, low: int) -> int:
    return check_int(name, value, low, error=InterventionError)


def _freqs(name: str, freqs: Any, p: int) -> list[int]:
    try:
        return fourier.check_freqs(name, freqs, p)
    except ScidlError as e:
        raise InterventionError(str(e)) from None


def patching_components(model, clusters: dict[int, list[int]] | None = None, pos: int = 2) -> list[str]:
    """Return components for patching at one position and granularity: the corrupted operand's
    embedding, each head and the attention output at `pos`, and each neuron cluster's
    pre-activations (name -> neuron ids; 8 contiguous neuron groups when there are none) at `pos`;
    for the MLP, its pre-activations and the groups (it has no positions).

    Every component is upstream of a nonlinearity (softmax or the MLP activation), so attribution
    patching is not exact for it by construction: components that feed the logits linearly (MLP
    outputs, post-activations) or that the corruption leaves unchanged would inflate the agreement.
    """
    pos = _int("pos", pos, 0)
    if model.cfg.arch == "transformer" and pos >= model.n_ctx:
        raise InterventionError(not_allowed("pos", pos, f"must be a position in [0, {model.n_ctx - 1}]"))
    hook, d_mlp = ("blocks.0.mlp.hook_pre" if model.cfg.arch == "transformer" else "hook_pre"), model.cfg.d_mlp
    at = "" if model.cfg.arch == "mlp" else f"@{pos}"
    clusters = {k: ids for k, ids in (clusters or {}).items() if ids}
    if not clusters:  # no frequency clusters: 8 contiguous neuron groups keep the granularity
        clusters = {i: list(range(i * d_mlp // 8, (i + 1) * d_mlp // 8)) for i in range(min(8, d_mlp))}
    groups = [f"{hook}:{','.join(map(str, ids))}{at}" for ids in clusters.values() if ids]
    if model.cfg.arch == "mlp":
        return ["hook_pre", *groups]
    heads = [f"blocks.0.attn.hook_z:{h}@{pos}" for h in range(model.cfg.n_heads)]
    return ["hook_embed@1", *heads, f"blocks.0.hook_attn_out@{pos}", *groups]


def with_embedding_freqs(model, freqs: list[int], keep: bool):
    """Return a copy of `model` whose input embedding keeps only (or loses) frequencies `freqs`."""
    _freqs("freqs", freqs, model.p)
    out = copy.deepcopy(model)
    W = embedding_matrix(out)
    with torch.no_grad():
        W.copy_(fourier.project_freqs(W.detach(), freqs, dim=0, keep=keep))
        if out.cfg.arch == "mlp":  # the MLP embeds b separately
            Wb = out.W_in[out.p:]
            Wb.copy_(fourier.project_freqs(Wb.detach(), freqs, dim=0, keep=keep))
    return out


def random_freqs(p: int, exclude, n: int, seed: int = 0) -> list[int]:
    """Return `n` distinct frequencies of Z_p outside `exclude`, drawn with `seed` (sorted): the
    random-frequency control."""
    if not is_prime(_int("p", p, 3)):
        raise InterventionError(not_allowed("p", p, "must be a prime >= 3"))
    exclude = _freqs("exclude", exclude, p)
    n, seed = _int("n", n, 0), _int("seed", seed, 0)
    others = [k for k in range(1, fourier.n_freqs(p) + 1) if k not in set(exclude)]
    if n > len(others):
        raise InterventionError(f"n={n} is not allowed: only {len(others)} frequencies lie outside {sorted(exclude)}")
    order = torch.randperm(len(others), generator=torch.Generator().manual_seed(seed))
    return sorted(others[i] for i in order[:n].tolist())


def energy_normalized_ablations(model, tokens: Tensor, labels: Tensor, key_freqs: list[int]) -> pd.DataFrame:
    """Return one row per key frequency and one for all non-key frequencies together: the share of
    the embedding's (non-constant) energy removed, the loss increase when those frequencies are
    removed from the embedding, and the increase per unit of energy share removed.

    The non-key row is the energy control: it is always defined, unlike a control that must remove as
    much energy as a key frequency holds (in a grokked model one key frequency often holds more
    energy than all non-key frequencies together)."""
    key_freqs = _freqs("key_freqs", key_freqs, model.p)
    share = fourier.embedding_freq_energy(embedding_matrix(model))
    clean = loss(model, tokens, labels)
    others = [k for k in range(1, len(share) + 1) if k not in set(key_freqs)]
    groups = [("key", [k]) for k in key_freqs] + [("non-key", others)]
    rows = [{"kind": kind, "freqs": freqs, "energy": float(share[[k - 1 for k in freqs]].sum()),
             "effect": loss(with_embedding_freqs(model, freqs, keep=False), tokens, labels) - clean}
            for kind, freqs in groups]
    table = pd.DataFrame(rows, columns=["kind", "freqs", "energy", "effect"])
    return table.assign(effect_per_energy=table.effect / table.energy)


def energy_normalized_gap(table: pd.DataFrame) -> float:
    """Return the mean loss increase per unit of energy over the key frequencies minus that of the
    non-key frequencies (nats per unit of energy share); InterventionError where undefined."""
    key, rest = table[table.kind == "key"], table[table.kind == "non-key"]
    if key.empty or rest.empty or not float(rest.energy.iloc[0]) > 0:
        raise InterventionError("a table without key frequencies, or whose non-key frequencies hold no "
                                "energy, is not allowed: the energy-normalised gap is undefined")
    return float(key.effect_per_energy.mean() - rest.effect_per_energy.iloc[0])


def ablate_freqs(model, tokens: Tensor, labels: Tensor, freqs: list[int]) -> pd.DataFrame:
    """Return losses with the embedding restricted to `freqs` (keep) and with them removed."""
    freqs = _freqs("freqs", freqs, model.p)
    rows = [{"component": f"embed freqs {freqs}", "ablation": name,
             "loss": loss(with_embedding_freqs(model, freqs, keep), tokens, labels)}
            for name, keep in (("keep only", True), ("remove", False))]
    clean = loss(model, tokens, labels)
    return pd.DataFrame(rows).assign(effect=lambda d: d.loss - clean)


class FourierView:
    """The explorer's view of grokking: the embedding's energy per frequency (key frequencies of the
    final model marked) and one neuron's activation grid over (a, b) with its 2-D spectrum."""

    def __init__(self, run, key_freqs: list[int] | None = None) -> None:
        self.run = run
        self.key_freqs = (fourier.check_freqs("key_freqs", key_freqs, run.config.task.p) if key_freqs is not None
                          else circuits.key_freqs(run.load_model()))

    @property
    def n_items(self) -> int:
        """Return the number of neurons one can pick."""
        return self.run.config.model.d_mlp

    def figure(self, model, step: int, neuron: int = 0) -> Figure:
        """Return the spectrum and neuron `neuron`'s activation grid and 2-D spectrum at `step`."""
        acts = circuits.neuron_acts(model)[:, :, neuron]
        spectrum = fourier.freq_grid_norms(fourier.fourier_transform_2d(acts))
        spectrum[0, 0] = 0  # the mean
        share = circuits.embedding_energy(model)
        from scidl import plots  # matplotlib only when a figure is drawn: `import scidl` stays light

        return plots.plot_checkpoint_view(share, self.key_freqs, acts, spectrum, step, neuron)


def q3_task(run, n: int = 256, seed: int = 0, draws: int = 4):
    """Return grokking's Q3 problem for `run`'s final transformer (scidl.yardsticks.q3): what at '='
    makes the answer, under a resample corruption (x' = another random pair of the same split).

    Candidates: every head and every MLP neuron (post-activation) at '=' (4 + d_mlp for Nanda's
    shape; in one layer nothing at a or b reaches the answer except through '=' attention, which the
    heads carry). Excluded as bottlenecks by construction: both operands' embeddings, the attention
    output and the MLP output at '='. Methods see `n` training pairs and as many resampled partners;
    the truth sees every test pair `draws` times, each with a fresh resampled test partner."""
    from scidl.phenomena.grokking.task import make_dataset
    from scidl.yardsticks.q3 import Q3Task

    n, seed, draws = _int("n", n, 2), _int("seed", seed, 0), _int("draws", draws, 1)
    cfg = run.config
    if cfg.model.arch != "transformer" or cfg.model.n_layers != 1:
        raise InterventionError(f"run {run.hash} (arch={cfg.model.arch!r}, n_layers={cfg.model.n_layers}) is not "
                                "allowed: grokking's Q3 task is stated for the one-layer transformer")
    data = make_dataset(cfg.task)
    (tr, tr_y), (te, te_y) = data.train, data.test
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(tr), generator=gen)[:n]
    partner = torch.randperm(len(tr), generator=gen)[:len(pick)]
    reps = [torch.randperm(len(te), generator=gen) for _ in range(draws)]
    pos, d_mlp, heads = 2, cfg.model.d_mlp, cfg.model.n_heads
    candidates = ([f"blocks.0.attn.hook_z:{h}@{pos}" for h in range(heads)]
                  + [f"blocks.0.mlp.hook_post:{i}@{pos}" for i in range(d_mlp)])
    excluded = {"hook_embed@0": "operand a's embedding: every path from a starts there",
                "hook_embed@1": "operand b's embedding: every path from b starts there",
                f"blocks.0.hook_attn_out@{pos}": "the heads' sum at '=': the only route from a and b to the answer",
                f"blocks.0.hook_mlp_out@{pos}": "the neurons' sum at '=': what the MLP adds to the answer, all of it"}
    return Q3Task(phenomenon="grokking", corruption="another random pair of the same split (both operands resampled)",
                  candidates=tuple(candidates), excluded=excluded, clean=tr[pick], corrupt=tr[partner], labels=tr_y[pick],
                  truth_clean=te.repeat(draws, 1), truth_corrupt=torch.cat([te[r] for r in reps]),
                  truth_labels=te_y.repeat(draws), answer_pos=pos)
