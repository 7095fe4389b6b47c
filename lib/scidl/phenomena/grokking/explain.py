"""Grokking's explanation of one model (`scidl.explain(run)`): the Fourier-multiplication mechanism of
Nanda et al. 2023, part by part, with its ablation evidence and a faithfulness score.

The mechanism is the model's key frequencies (the neuron rule, `circuits.key_freqs`). Faithfulness
(scidl.explain) is measured by an intervention inside the network, on the test pairs: the embedding
keeps only the mechanism's frequencies (every other Fourier component of W_E removed) and the rest
of the model runs as trained. The control: the same intervention for `n_random` sets of as many
frequencies drawn from *all* frequencies (key ones included, so a random set can win); the oracle:
the same number of frequencies with the most embedding energy, shown beside it.

Nanda et al.'s restricted logits (only the cos/sin(w(a ± b)) components of the model's own output
logits at the key frequencies) are reported apart as `logit_projection_score`: they project the
output, they do not intervene, and the key frequencies are by construction where the logits'
energy is, so that number is no test of the mechanism.
"""
from __future__ import annotations

import itertools
import math

import pandas as pd
import torch

from scidl.errors import ScidlError, check_int
from scidl.explain import Explanation, faithfulness
from scidl.interventions import loss
from scidl.phenomena.grokking import circuits, fourier, zoom
from scidl.phenomena.grokking.measures import _rows, restricted_logits
from scidl.phenomena.grokking.task import make_dataset
from scidl.train import cross_entropy


def _share(energy: torch.Tensor, key: list[int]) -> float:
    return float(energy[[k - 1 for k in key]].sum() / energy.sum())


def explain(run, n_random: int = 20) -> Explanation:
    """Return the explanation of `run`'s final model (add or sub: the Fourier mechanism's logits are
    cos(w(a ± b - c)))."""
    task = run.config.task
    if task.op not in fourier.SUM_SIGN:
        raise ScidlError(f"op={task.op!r} is not allowed: explain reads the Fourier mechanism of "
                         f"{sorted(fourier.SUM_SIGN)}; for mul/div read the discrete-log basis (notebook 06)")
    n_random = check_int("n_random", n_random, 1)  # numpy integers too
    model, data, p, sign = run.load_model(), make_dataset(task), task.p, fourier.SUM_SIGN[task.op]
    key = circuits.key_freqs(model)
    if not key:
        raise ScidlError(f"run {run.hash} has no key frequencies (no frequency dominates >= 2% of its MLP "
                         "neurons): there is no Fourier mechanism to explain")
    if len(key) > fourier.n_freqs(p) // 2:
        raise ScidlError(f"run {run.hash} has {len(key)} of {fourier.n_freqs(p)} frequencies as key: too many "
                         "for a random mechanism of the same size to be a control")
    logits = circuits.grid_logits(model).flatten(0, 1).double()  # (p*p, p), rows a*p + b
    test = ~data.is_train
    rows, labels = _rows(data, test), data.labels[test]
    tokens, test_labels = data.test
    full = float(cross_entropy(logits[rows], labels))
    chance = math.log(p)

    def kept(freqs: list[int]) -> float:  # the intervention: the embedding keeps only `freqs`
        return loss(zoom.with_embedding_freqs(model, sorted(freqs), keep=True), tokens, test_labels)

    embed_energy = circuits.embedding_energy(model)
    n_all = fourier.n_freqs(p)
    randoms = [sorted((torch.randperm(n_all, generator=torch.Generator().manual_seed(i))[:len(key)] + 1).tolist())
               for i in range(n_random)]
    oracle = sorted((torch.argsort(embed_energy, descending=True, stable=True)[:len(key)] + 1).tolist())
    mech, random_losses, oracle_loss = kept(key), [kept(f) for f in randoms], kept(oracle)
    projected = float(cross_entropy(restricted_logits(logits, key, sign)[rows], labels))
    faith = {"loss": mech, "full_loss": full, "chance_loss": chance, "score": faithfulness(mech, full, chance),
             "intervention": "embedding restricted to the mechanism's frequencies (test pairs)",
             "mechanism": key, "random_freqs": randoms, "random_pool": f"all {n_all} frequencies",
             "random_losses": random_losses, "random_scores": [faithfulness(x, full, chance) for x in random_losses],
             "oracle": oracle, "oracle_score": faithfulness(oracle_loss, full, chance),
             "logit_projection_score": faithfulness(projected, full, chance)}

    # the parts, each with its evidence
    fractions, clusters = circuits.neuron_clusters(model)
    on_key = int(sum(int((clusters == k).sum()) for k in key))
    unembed = fourier.freq_energy(fourier.fourier_transform(circuits.neuron_logit_map(model).detach().double().T, 0))
    trig, _ = fourier.logit_trig_fraction(logits.view(p, p, p), key, sign)
    abl = zoom.ablate_freqs(model, tokens, test_labels, key).set_index("ablation").loss
    chance_share = len(key) / fourier.n_freqs(p)
    parts = [
        {"component": "W_E (embedding)", "role": "writes cos/sin(w a), cos/sin(w b) at the key frequencies",
         "evidence": f"{_share(embed_energy, key):.1%} of its non-constant energy (chance {chance_share:.1%})"},
    ]
    claims = [f"key frequencies {key} (each the dominant frequency of >= 2% of the MLP neurons)",
              f"the embedding puts {_share(embed_energy, key):.0%} of its energy on them (chance {chance_share:.0%})"]
    if run.config.model.arch == "transformer":
        att = circuits.attention_from_eq(model).mean(dim=(0, 1))  # (head, 3): from '=' to a, b, =
        for h in range(att.shape[0]):
            parts.append({"component": f"blocks.0.attn head {h}", "role": "moves a and b to the '=' position",
                          "evidence": f"attention from '=': a {att[h, 0]:.2f}, b {att[h, 1]:.2f}, = {att[h, 2]:.2f}"})
        claims.append("the heads move a and b to '=' (mean attention to a, b: "
                      + ", ".join(f"{att[h, 0]:.2f}/{att[h, 1]:.2f}" for h in range(att.shape[0])) + ")")
    parts += [
        {"component": "MLP neurons", "role": "multiply: cos(w(a ± b)) from products of the operand terms",
         "evidence": f"{on_key} of {len(clusters)} neurons have >= 85% of their variance in one key frequency"},
        {"component": "W_L (neurons -> logits)", "role": "reads cos/sin(w(a ± b)) out as cos(w(a ± b - c))",
         "evidence": f"{_share(unembed, key):.1%} of its energy along c on the key frequencies"},
        {"component": "logits", "role": "sum of cos(w(a ± b - c)) over the key frequencies",
         "evidence": f"those terms explain {trig:.1%} of the logit variance"},
    ]
    claims += [f"{on_key} of {len(clusters)} MLP neurons are each tuned to one key frequency",
               f"the neuron-to-logit map puts {_share(unembed, key):.0%} of its energy on them",
               f"cos(w(a {'+' if sign > 0 else '-'} b - c)) at the key frequencies explains {trig:.0%} of the logit variance",
               f"ablation on test pairs: keeping only the key frequencies in the embedding gives loss "
               f"{abl['keep only']:.3g}, removing them {abl['remove']:.3g} (full {full:.3g}, chance {chance:.3g})"]

    def energy_figure():
        from scidl import plots  # matplotlib only when drawn

        return plots.plot_freq_energy(embed_energy, key, title=f"run {run.hash}: embedding energy per frequency")

    return Explanation("grokking", run.hash, claims, pd.DataFrame(parts), faith, [energy_figure],
                       template="Nanda et al. 2023's Fourier multiplication, instantiated per model (a known template)")


def check_claims(run, explanation: Explanation) -> pd.DataFrame:
    """Return grokking's Q4 checks of an explanation, each an intervention with a predicted outcome
    on the test pairs: removing the key frequencies from the embedding breaks the answer (loss above
    half of chance); keeping only them preserves it (accuracy >= 0.9); each key frequency alone
    matters more than the *strongest* non-key frequency (loss increase when removed; every frequency
    is tried); the embedding restricted to the key frequencies beats every random same-size set
    (drawn from all frequencies) by 0.2 faithfulness; the key frequencies are complete and minimal
    (Wang et al. 2022, `_completeness_minimality`). Columns claim, predicted, observed, passed."""
    task = run.config.task
    model, data, p = run.load_model(), make_dataset(task), task.p
    key = list(explanation.faithfulness["mechanism"])
    tokens, labels = data.test
    chance = math.log(p)

    def acc(m) -> float:
        with torch.no_grad():
            return float((m.last_logits(tokens).argmax(-1) == labels).double().mean())

    rows = []
    removed = zoom.ablate_freqs(model, tokens, labels, key).set_index("ablation").loss["remove"]
    rows.append({"claim": f"removing key frequencies {key} from the embedding breaks (a+b) mod p",
                 "predicted": f"test loss > {chance / 2:.3g}", "observed": f"{removed:.3g}",
                 "passed": removed > chance / 2})
    kept = acc(zoom.with_embedding_freqs(model, key, keep=True))
    rows.append({"claim": "keeping only the key frequencies in the embedding preserves the answer",
                 "predicted": "test accuracy >= 0.9", "observed": f"{kept:.3f}", "passed": kept >= 0.9})
    clean = loss(model, tokens, labels)
    effect = {k: loss(zoom.with_embedding_freqs(model, [k], keep=False), tokens, labels) - clean
              for k in range(1, fourier.n_freqs(p) + 1)}
    strongest = max((k for k in effect if k not in key), key=lambda k: effect[k])
    for k in key:
        rows.append({"claim": f"key frequency {k} matters more than every non-key frequency",
                     "predicted": f"loss increase when removed > that of the strongest non-key frequency ({strongest})",
                     "observed": f"{effect[k]:.3g} vs {effect[strongest]:.3g}", "passed": effect[k] > effect[strongest]})
    f = explanation.faithfulness
    rows.append({"claim": "the key frequencies are a faithful mechanism (embedding restricted to them)",
                 "predicted": f"faithfulness beats every one of {len(f['random_scores'])} random same-size sets "
                              f"drawn from {f.get('random_pool', 'the frequencies')} by >= 0.2",
                 "observed": f"{explanation.score:.3f} vs best random {explanation.random_score:.3f} "
                             f"(oracle {f.get('oracle_score', math.nan):.3f})",
                 "passed": explanation.beats_random(0.2)})
    rows += _completeness_minimality(model, tokens, labels, key, f["full_loss"], f["chance_loss"])
    return pd.DataFrame(rows)


def _completeness_minimality(model, tokens, labels, key: list[int], full: float, chance: float) -> list[dict]:
    r"""Return Wang et al. 2022's completeness and minimality checks of a frequency mechanism C inside
    the model M, with the embedding intervention: faith(S) keeps only frequencies S; faith(M \ K)
    removes K from the full embedding. Complete: for every subset K of C, |faith(C \ K) - faith(M \ K)|
    <= 0.2 (knocking K out hurts the mechanism as it hurts the model). Minimal: for every v in C some
    K without v has faith(C \ K) - faith(C \ (K + v)) >= 0.1 (v matters somewhere). Faithfulness is
    clipped to [0, 1] here: below chance it is unbounded, and a gap between two broken models (losses
    7 and 10, both worse than a uniform guess) is no incompleteness."""
    def faith(freqs, keep: bool) -> float:  # clipped to [0, 1]: two models worse than chance are equally broken
        f = faithfulness(loss(zoom.with_embedding_freqs(model, sorted(freqs), keep=keep), tokens, labels), full, chance)
        return min(max(f, 0.0), 1.0)

    subsets = [frozenset(K) for r in range(len(key) + 1) for K in itertools.combinations(key, r)]
    kept = {K: faith(set(key) - K, keep=True) for K in subsets}
    gap = max(abs(kept[K] - faith(K, keep=False)) for K in subsets)
    drop = {v: max(kept[K] - kept[K | {v}] for K in subsets if v not in K) for v in key}
    weakest = min(drop, key=drop.get)
    return [{"claim": "the key frequencies are complete (Wang et al. 2022): knocking out any subset of them hurts "
                      "the mechanism as it hurts the model",
             "predicted": f"|faith(C minus K) - faith(M minus K)| <= 0.2 for all {len(subsets)} subsets K of C",
             "observed": f"largest gap {gap:.3f}", "passed": gap <= 0.2},
            {"claim": "the key frequencies are minimal (Wang et al. 2022): each one matters in some context",
             "predicted": "for each key frequency v some K without v has faith(C minus K) - faith(C minus K, v) >= 0.1",
             "observed": f"smallest best drop {drop[weakest]:.3f} (frequency {weakest})", "passed": drop[weakest] >= 0.1}]
