"""Grokking's explanation of one model (`scidl.explain(run)`): the Fourier-multiplication mechanism of
Nanda et al. 2023, part by part, with its ablation evidence and a faithfulness score.

The mechanism is the model's key frequencies (the neuron rule, `circuits.key_freqs`). Its restricted
model is Nanda et al.'s restricted logits: only the cos/sin(w(a ± b)) components of the logits at
the key frequencies, plus the per-output mean of the rest. Faithfulness (scidl.explain) is measured
on the test pairs; the control is the same restriction to `n_random` random sets of as many
non-key frequencies.
"""
from __future__ import annotations

import math

import pandas as pd
import torch

from scidl.errors import ScidlError
from scidl.explain import Explanation, faithfulness
from scidl.interventions import loss
from scidl.phenomena.grokking import circuits, fourier, zoom
from scidl.phenomena.grokking.measures import _rows, restricted_logits
from scidl.phenomena.grokking.task import make_dataset
from scidl.train import cross_entropy


def _share(energy: torch.Tensor, key: list[int]) -> float:
    return float(energy[[k - 1 for k in key]].sum() / energy.sum())


def explain(run, n_random: int = 5) -> Explanation:
    """Return the explanation of `run`'s final model (add or sub: the Fourier mechanism's logits are
    cos(w(a ± b - c)))."""
    task = run.config.task
    if task.op not in fourier.SUM_SIGN:
        raise ScidlError(f"op={task.op!r} is not allowed: explain reads the Fourier mechanism of "
                         f"{sorted(fourier.SUM_SIGN)}; for mul/div read the discrete-log basis (notebook 06)")
    if isinstance(n_random, bool) or not isinstance(n_random, int) or n_random < 1:
        raise ScidlError(f"n_random={n_random!r} is not allowed: must be an integer >= 1")
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
    full = float(cross_entropy(logits[rows], labels))
    chance = math.log(p)

    def restricted(freqs: list[int]) -> float:
        return float(cross_entropy(restricted_logits(logits, freqs, sign)[rows], labels))

    mech = restricted(key)
    randoms = [zoom.random_freqs(p, key, len(key), seed=i) for i in range(n_random)]
    random_losses = [restricted(f) for f in randoms]
    faith = {"loss": mech, "full_loss": full, "chance_loss": chance,
             "score": faithfulness(mech, full, chance), "mechanism": key, "random_freqs": randoms, "random_losses": random_losses,
             "random_scores": [faithfulness(x, full, chance) for x in random_losses]}

    # the parts, each with its evidence
    embed_energy = circuits.embedding_energy(model)
    fractions, clusters = circuits.neuron_clusters(model)
    on_key = int(sum(int((clusters == k).sum()) for k in key))
    unembed = fourier.freq_energy(fourier.fourier_transform(circuits.neuron_logit_map(model).detach().double().T, 0))
    trig, _ = fourier.logit_trig_fraction(logits.view(p, p, p), key, sign)
    tokens, test_labels = data.test
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

    return Explanation("grokking", run.hash, claims, pd.DataFrame(parts), faith, [energy_figure])


def check_claims(run, explanation: Explanation) -> pd.DataFrame:
    """Return grokking's Q4 checks of an explanation, each an intervention with a predicted outcome
    on the test pairs: removing the key frequencies from the embedding breaks the answer (loss above
    half of chance); keeping only them preserves it (accuracy >= 0.9); each key frequency alone
    matters more than the *strongest* non-key frequency (loss increase when removed; every frequency
    is tried); the restricted logits beat every random mechanism of the same size by 0.2
    faithfulness. Columns claim, predicted, observed, passed."""
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
    margin = explanation.score - explanation.random_score
    rows.append({"claim": "the key-frequency logits are a faithful mechanism",
                 "predicted": "faithfulness beats every random same-size mechanism by >= 0.2",
                 "observed": f"{explanation.score:.3f} vs best random {explanation.random_score:.3f}",
                 "passed": margin >= 0.2})
    return pd.DataFrame(rows)
