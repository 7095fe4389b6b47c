"""Build notebooks/08_iterate_lottery_tickets.ipynb (unexecuted) from the cell sources below; run it
with ci/run_notebooks.py --inplace to fill its outputs. Kept so the notebook's source has one home."""
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]

CELLS = [
    ("md", """# 08 · Iterate: lottery tickets on MNIST-1D

**Question.** Does a fully connected net trained on MNIST-1D hold a sparse subnetwork that, rewound to
its initial weights and retrained alone, matches the dense net, while the same sparsity pattern from a
fresh init, or a random pattern of the same per-layer density, does not? And what does the pattern
keep?

**Expected answer.** Yes, down to roughly a tenth of the weights (Frankle & Carbin 2019 on MNIST; the
issue's measurement on MNIST-1D), with the advantage over both controls growing as the net gets
sparser. On MNIST-1D the first layer's surviving weights are expected to form *local receptive
fields* (Pellegrini & Biroli 2021; Redman et al. 2024).

The loop on a third phenomenon, the first whose training procedure differs: iterative magnitude
pruning (IMP) trains, prunes, rewinds and retrains a chain of runs, each a stored run naming its
parents (`scidl.masks`, `scidl.phenomena.lottery.imp`)."""),
    ("params", """dataset: str = "mnist1d"  # the main data set; allowed: one of mnist1d, digits
hidden: list[int] = [300, 100]  # hidden widths of the fully connected net; allowed: 1 to 4096; 1 to 4 items
steps: int = 1000  # Adam steps per run (and per retraining); allowed: 10 to 100000
batch_size: int = 60  # rows per step; allowed: 1 to 4000
lr: float = 1.2e-3  # Adam learning rate; allowed: above 0; at most 1
prune_rate: float = 0.5  # share of the surviving weights pruned per round, per layer (output layer at half); allowed: above 0; below 1
rounds: int = 4  # IMP rounds after the dense run; allowed: 2 to 20
rewind_step: int = 0  # the dense run's step the survivors are rewound to (0: its init); allowed: at least 0
test_round: int = 3  # the round the density claims are about; allowed: 1 to 20
locality_round: int = 4  # the round the receptive-field claims are about; allowed: 1 to 20
margin: float = 0.02  # a ticket matches the dense net when within this accuracy of it; allowed: 0 to 0.5
explore_seeds: list[int] = [0, 1]  # exploratory seeds (looked at before registration); allowed: seed; non-empty; distinct
sweep_scales: list[float] = [0.1, 0.3]  # exploratory width sweep: nets this many times as wide as hidden; allowed: above 0; at most 4; distinct
sweep_rewind_steps: list[int] = [50]  # exploratory rewind sweep: tickets rewound to these steps of a dense run (exploratory seeds, main width); allowed: at least 0; distinct
reference_steps: int = 1000  # steps of the MLP and CNN reference rows (mnist1d's recipe: lr 0.01, batch 100); allowed: 10 to 100000
fresh_seeds: list[int] = [15, 16, 17, 18, 19]  # seeds run only after registration (10-14 were seen while designing); allowed: seed; 2 to 50 items; distinct
permute_seed: int = 7  # the fixed input permutation of the permuted-input claim; allowed: 0 to 4294967295
second_dataset: str = "digits"  # the second data set (not registered): sklearn digits, or Fashion-MNIST (paper scale); allowed: one of digits, fashion
second_seeds: list[int] = [20, 21]  # its seeds; allowed: seed; distinct
ledger_path: str = ""  # JSON-lines ledger (empty: $SCIDL_LEDGER, else the run store's)
workers: int = 2  # worker processes for each round's runs; allowed: 1 to 64
threads: int = 2  # torch threads in this kernel; allowed: 1 to 64"""),
    ("md", """Paper scale (`notebooks/08_iterate_lottery_tickets.paper.yaml`): more rounds at open_lth's 20 % per
round, rewinding to step 100, more steps and seeds, and Fashion-MNIST's LeNet-300-100 as the second data set
(Debian's `dataset-fashion-mnist`; `ci/main.sh --paper` installs it where it can).

## Setup"""),
    ("code", """import math

import numpy as np
import pandas as pd
import matplotlib.pyplot as plt
import torch

import scidl
from scidl import masks
from scidl.hypotheses import Control, Hypothesis, Ledger
from scidl.phenomena.lottery import definition, imp

scidl.check_parameters(globals())  # unknown, mistyped or disallowed parameters fail here, before anything runs
if max([rewind_step, *sweep_rewind_steps]) >= steps or max(test_round, locality_round) > rounds:
    raise scidl.ConfigError(f"rewind_step={rewind_step}, sweep_rewind_steps={sweep_rewind_steps}, test_round={test_round}, "
                            f"locality_round={locality_round} are not allowed: need every rewind step < steps={steps} "
                            f"and both rounds <= rounds={rounds}")
scidl.configure_torch(threads)
pd.set_option("display.width", 200)
executor = "processes" if workers > 1 else "inprocess"
base = imp.base_config(dataset, hidden, steps, batch_size, lr, rewind_step)
arms = ("reinit", "random")
print(base.task, base.model.hidden)"""),
    ("md", """## 1 · Pick: the phenomenon, defined before any result

A **winning ticket** at a density (the share of weights kept) is the rewound subnetwork IMP finds,
such that over seeds (t intervals, paired by seed):
- it *matches* the dense net: the interval of (ticket − dense) lies above −`margin`;
- it *beats both controls* at the same density: the interval of (ticket − control) lies above 0, for
  the same mask from a fresh init (`reinit`) and for a random mask of the same per-layer density
  (`random`).

`ticket_sparsity_limit` is the lowest density at which the ticket still wins. The chain: round r
prunes `prune_rate` of the weights round r − 1 kept (by magnitude of its final weights, each layer
apart, the output layer at half the rate), rewinds the survivors to the dense run's step
`rewind_step` and retrains for the rest of the budget. The helpers below train a chain round by
round: each round's runs (all seeds, ticket and controls) go to the workers together."""),
    ("code", """def chains(seeds, last=rounds, **fields):
    \"\"\"Return {seed: (dense config, [ticket rounds 1..last], [{control: config} per round])} (imp.chains).\"\"\"
    return imp.chains(base, seeds, last, rate=prune_rate, rewind_step=rewind_step, **fields)


def train_chains(*jobs, extra=()):
    \"\"\"Train jobs (plan, arms, last round) in one sweep, each seed's chain one work unit (imp.train_chains).\"\"\"
    imp.train_chains(*jobs, executor=executor, workers=workers, extra=extra)


def table(plan, arms=arms, last=None):
    \"\"\"Return one row per seed, round and arm: density (the mask's) and final test accuracy (imp.chain_table).\"\"\"
    return imp.chain_table(plan, arms, last)"""),
    ("md", """**The data and the training, checked against the paper's ordering.** Greydanus & Kobak report test
accuracy on MNIST-1D of 68 % for an MLP and 94 % for their CNN (ConvBase), and with the input features
shuffled, the CNN drops while the MLP does best. The check, stated before the runs: the CNN beats the MLP
by more than 0.1; shuffled, it loses more than 0.1 and the MLP is at least as good (within 0.02). The
levels are not checked: these runs are shorter than the paper's. Two seeds of each, with mnist1d's own recipe (Adam, lr 0.01, batch
100) for `reference_steps` steps, plain and with the fixed permutation of section 5, trained in the next
section's sweep."""),
    ("code", """reference = {(arch, order, s): scidl.make_config(
    kind="lottery", dataset=dataset, arch=arch, lr=1e-2, weight_decay=0.0, beta2=0.999, warmup_steps=0, batch_size=100,
    steps=reference_steps, eval_every=max(reference_steps // 10, 1), checkpoint_every=0, seed=s,
    permute_seed=permute_seed if order == "permuted" else -1)
    for arch in ("mlp", "cnn") for order in ("plain", "permuted") for s in explore_seeds}"""),
    ("md", """## 2 · Sweep: accuracy against density, ticket and controls, across widths (exploratory seeds)

The width sweep runs each net through every round; the rewind sweep retrains tickets from step k of
a dense run (Frankle et al. 2020's rewinding) instead of its init, without controls. The second data set's chains (section 6, not
registered) and the reference rows train here too, in one sweep with the exploratory ones."""),
    ("code", """# NBVAL_IGNORE_OUTPUT
explore = chains(explore_seeds)
widths = {sc: chains(explore_seeds, hidden=imp.scaled(hidden, sc)) for sc in sweep_scales}
rewound = {k: imp.chains(imp.base_config(dataset, hidden, steps, batch_size, lr, k), explore_seeds, rounds,
                          rate=prune_rate, rewind_step=k) for k in sweep_rewind_steps if k != rewind_step}
second_fields = {"dataset": second_dataset, **({"data_seed": 0} if second_dataset == "digits" else {})}
second = chains(second_seeds, test_round, **second_fields) if second_seeds else {}
train_chains((explore, arms, rounds), *[(w, arms, rounds) for w in widths.values()], (second, ("reinit",), test_round),
             *[(r, (), rounds) for r in rewound.values()], extra=list(reference.values()))"""),
    ("code", """store = scidl.RunStore()
R = pd.DataFrame([{"arch": a, "inputs": o, "seed": s, "test_acc": store.load(c).summary["final_test_acc"],
                   "train_acc": store.load(c).metrics.train_acc.iloc[-1]} for (a, o, s), c in reference.items()])
ref = R.groupby(["arch", "inputs"])[["train_acc", "test_acc"]].mean().unstack("inputs")
print(ref.round(3).to_string())
print("paper (Greydanus & Kobak, 6,000 steps; every model but logistic regression at 100 % train): MLP 0.68, CNN 0.94; "
      "with shuffled features the CNN drops and the MLP does best")
acc = R.groupby(["arch", "inputs"]).test_acc.mean()
ordering = bool(acc["cnn", "plain"] > acc["mlp", "plain"] + 0.1 and acc["cnn", "plain"] - acc["cnn", "permuted"] > 0.1
                and acc["mlp", "permuted"] >= acc["cnn", "permuted"] - 0.02)
print(f"the paper's ordering (CNN above the MLP by 0.1; shuffled, the CNN loses 0.1 and the MLP is at least as good, "
      f"within 0.02): {ordering}; the levels are lower than the paper's at {reference_steps} steps")"""),
    ("code", """E = table(explore)
by = E.groupby(["round", "arm"]).agg(density=("density", "mean"), test_acc=("test_acc", "mean")).unstack("arm")
print(by.round(3).to_string())
fig, ax = plt.subplots(figsize=(6, 3.4))
plt.close(fig)  # shown once, as the cell's value
for arm, g in E.groupby("arm"):
    m = g.groupby("round")[["density", "test_acc"]].mean()
    ax.plot(m.density, m.test_acc, "o-" if arm != "dense" else "s", label=arm)
ax.set(xscale="log", xlabel="share of weights kept", ylabel="final test accuracy",
       title=f"IMP on {dataset}, exploratory seeds {explore_seeds}")
ax.invert_xaxis()
ax.legend(fontsize=8)
fig.tight_layout()
fig"""),
    ("code", """rows = []
for sc, plan in [(1.0, explore), *widths.items()]:
    T = table(plan)
    at = T[T["round"] == test_round].groupby("arm").agg(density=("density", "mean"), test_acc=("test_acc", "mean"))
    rows.append({"scale": sc, "hidden": imp.scaled(hidden, sc), "weights": imp.n_weights(plan[explore_seeds[0]][0]),
                 "dense": T[T.arm == "dense"].test_acc.mean(), **{f"{a}@{test_round}": at.test_acc[a] for a in at.index},
                 "density": at.density["ticket"], "point_limit": imp.point_limit(T, margin=margin)})
S = pd.DataFrame(rows).sort_values("weights")
print(f"width sweep (exploratory seeds; accuracies at round {test_round}; point_limit: the lowest density at which the "
      f"ticket's mean is within {margin} of the dense mean and above both controls' by 0.02; 1: none; a limit at the last "
      f"round is censored: the ticket may win further)")
print(S.round(3).to_string(index=False))
K = pd.concat([table(plan, ()).assign(rewind=k) for k, plan in [(rewind_step, explore), *rewound.items()]])
K = K[K.arm == "ticket"].groupby(["round", "rewind"]).test_acc.mean().unstack("rewind")
print(f"rewind sweep (exploratory seeds): ticket test accuracy by round, rewound to step k of a dense run")
print(K.round(3).to_string())"""),
    ("md", """## 3 · Zoom: what the first layer's mask keeps

For each first-layer unit with at least two surviving inputs, the mean pairwise distance of their
positions along the signal. Against two nulls: random positions (the exact expectation, (n + 1) / 3)
and, stricter, the same mask with each input's column shuffled across units, which keeps *which
inputs survive* (edges of the signal carry less, and may be pruned for every unit) and asks whether
*each unit's* inputs are closer together than that alone gives. Beside the ticket, a random mask of
its density (1 by construction against the column null) and the dense net's final weights pruned once,
by magnitude, to the ticket's density ("one-shot"): is the locality IMP's, or any magnitude pruning's?"""),
    ("code", """def receptive(mask, order=None):
    \"\"\"Return the locality ratios of a first-layer mask: vs random positions and vs the column null.\"\"\"
    return {"ratio_vs_random": imp.locality(mask, order)["ratio"], "ratio_vs_columns": imp.locality_ratio(mask, order)}


def one_shot(dense_run, mask):
    \"\"\"Return the dense run's final first-layer weights pruned once, by magnitude, to `mask`'s density.\"\"\"
    w = dense_run.load_state()["fc0.weight"].abs().flatten()
    keep = torch.zeros(w.shape, dtype=torch.bool)
    keep[torch.topk(w, int(mask.sum())).indices] = True
    return keep.reshape(mask.shape)


rows = []
for s, (dense, tickets, controls) in explore.items():
    for r, (t, c) in enumerate(zip(tickets, controls), 1):
        ticket_mask = store.load(t).mask["fc0.weight"]
        for arm, m in (("ticket", ticket_mask), ("random", store.load(c["random"]).mask["fc0.weight"]),
                       ("one-shot", one_shot(store.load(dense), ticket_mask))):
            rows.append({"seed": s, "round": r, "arm": arm, **receptive(m)})
L = pd.DataFrame(rows)
print(L.groupby(["round", "arm"])[["ratio_vs_random", "ratio_vs_columns"]].mean().unstack("arm").round(3).to_string())"""),
    ("code", """first = explore[explore_seeds[0]]
fig, axes = plt.subplots(1, rounds, figsize=(8, 2.6), squeeze=False)
plt.close(fig)
for r, ax in enumerate(axes[0]):
    m = store.load(first[1][r]).mask["fc0.weight"][:40].float()
    ax.imshow(m.numpy(), aspect="auto", cmap="Greys", interpolation="nearest")
    ax.set(title=f"round {r + 1}", xlabel="input position", yticks=[])
fig.suptitle("first-layer masks of 40 units (black: kept), seed " + str(explore_seeds[0]), fontsize=9)
fig.tight_layout()
fig"""),
    ("md", """## 4 · Hypothesize: four claims, registered before any fresh seed runs

The exploratory seeds and every run above are registered as exploratory: they inspired the claims
and can never be their evidence. LT4 is the one that could embarrass the literature's reading: if the
first layer's locality comes from the data's spatial structure, a net shown the inputs in a fixed
permuted order should find fields local in the *original* order, not in the order it sees."""),
    ("code", """ledger = Ledger(ledger_path) if ledger_path else Ledger()
common = {"task.dataset": dataset, "train.prune_rate": prune_rate, "train.steps": steps - rewind_step,
          "train.init_step": rewind_step}
plain, permuted = {**common, "task.permute_seed": -1}, {**common, "task.permute_seed": permute_seed}
H = [
    Hypothesis(id="LT1", scope=plain, comparison=">", threshold=0.03,
               claim=f"At round {test_round} the ticket beats the same mask from a fresh init by more than 3 points.",
               measurement=f"test accuracy of the round-{test_round} ticket minus its reinit control, per fresh seed",
               falsifier="the 95% interval of the mean gap reaches 0.03 or below",
               controls=(Control(name="random mask", comparison=">", threshold=0.03,
                                 claim="the ticket also beats a random mask of the same per-layer density by "
                                       "more than 3 points"),)),
    Hypothesis(id="LT2", scope=plain, comparison=">", threshold=-margin,
               claim=f"At round {test_round} the ticket matches the dense net within {margin:.0%}.",
               measurement=f"test accuracy of the round-{test_round} ticket minus its dense run's, per fresh seed",
               falsifier=f"the 95% interval of the mean gap reaches -{margin} or below"),
    Hypothesis(id="LT3", scope=plain, comparison=">", threshold=1.05,
               claim=f"At round {locality_round} each first-layer unit's surviving inputs are closer together than "
                     "which inputs survive alone explains.",
               measurement="column-null spread / observed spread of the ticket's fc0 mask, per fresh seed",
               falsifier="the 95% interval of the mean ratio reaches 1.05 or below",
               controls=(Control(name="one-shot", comparison=">", threshold=0.0,
                                 claim="the ticket's ratio exceeds that of the dense net's final first-layer weights "
                                       "pruned once, by magnitude, to the same density: the iterations, not magnitude "
                                       "pruning alone, make the fields local"),)),
    Hypothesis(id="LT4", scope=permuted, comparison=">", threshold=1.05,
               claim="With the inputs in a fixed permuted order, the ticket's first-layer fields are local in the "
                     "original order of the signal (beyond which inputs survive).",
               measurement=f"LT3's ratio, read in the original order, for a chain on inputs permuted with seed "
                           f"{permute_seed}, per fresh seed",
               falsifier="the 95% interval of the mean ratio reaches 1.05 or below",
               controls=(Control(name="presented order", comparison="<", threshold=1.05,
                                 claim="the same mask read in the order the net sees stays below 1.05"),)),
]
exploratory = [c for d, t, cs in explore.values() for c in [d, *t, *(x for c in cs for x in c.values())]]
for h in H:
    ledger.register(h, exploratory_runs=exploratory)
    print(f"{h.id}: {h.prediction}  [{h.content_hash}]")"""),
    ("md", """## 5 · Test: fresh seeds, the controls, the permuted inputs

Every run below starts after the registration. The four claims are one family, Holm-corrected
(`Ledger.family_verdicts`)."""),
    ("code", """# NBVAL_IGNORE_OUTPUT
fresh = chains(fresh_seeds)
shuffled = chains(fresh_seeds, permute_seed=permute_seed)
layers = imp.weight_names(base)
by_layer = {s: imp.layer_controls(t[test_round - 1], layers) for s, (_, t, _) in fresh.items()}
train_chains((fresh, ("reinit", "random"), rounds), (shuffled, (), locality_round),
             extra=[c for d in by_layer.values() for c in d.values()])"""),
    ("code", """F = table(fresh)
perm = scidl.make_dataset(base.replace(permute_seed=permute_seed).task).permutation
for s, (dense, tickets, controls) in fresh.items():
    ticket = store.load(tickets[test_round - 1])
    acc = lambda cfg: store.load(cfg).summary["final_test_acc"]
    ledger.add_evidence("LT1", ticket, acc(tickets[test_round - 1]) - acc(controls[test_round - 1]["reinit"]))
    ledger.add_evidence("LT1", ticket, acc(tickets[test_round - 1]) - acc(controls[test_round - 1]["random"]),
                        condition="random mask")
    ledger.add_evidence("LT2", ticket, acc(tickets[test_round - 1]) - acc(dense))
    deep = store.load(tickets[locality_round - 1])
    ledger.add_evidence("LT3", deep, receptive(deep.mask["fc0.weight"])["ratio_vs_columns"])
    once = one_shot(store.load(dense), deep.mask["fc0.weight"])
    ledger.add_evidence("LT3", deep, receptive(deep.mask["fc0.weight"])["ratio_vs_columns"]
                        - receptive(once)["ratio_vs_columns"], condition="one-shot")
    p = store.load(shuffled[s][1][locality_round - 1])
    ledger.add_evidence("LT4", p, receptive(p.mask["fc0.weight"], order=perm)["ratio_vs_columns"])
    ledger.add_evidence("LT4", p, receptive(p.mask["fc0.weight"])["ratio_vs_columns"], condition="presented order")
T = ledger.table()
T = T[T.id.str.startswith("LT")]
family = ledger.family_verdicts(list(T.id)).set_index("id")
T = T.assign(p_value=T.id.map(family.p_value), unadjusted=T.verdict, verdict=T.id.map(family.verdict))
print(T[["id", "n", "mean", "ci_low", "ci_high", "controls", "p_value", "unadjusted", "verdict"]].round(3)
      .to_string(index=False))"""),
    ("code", """# NBVAL_IGNORE_OUTPUT
_ = ledger.record_family_verdicts(list(T.id))"""),
    ("code", """by_round = []
for r in range(1, rounds + 1):
    g = F[F["round"] == r]
    pivot = g.pivot(index="seed", columns="arm", values="test_acc")
    dense_acc = F[F.arm == "dense"].set_index("seed").test_acc
    w = definition.winning(list(pivot.ticket), list(dense_acc[pivot.index]),
                           {"reinit": list(pivot.reinit), "random": list(pivot.random)}, margin=margin)
    by_round.append({"round": r, "density": float(g[g.arm == "ticket"].density.mean()), "ticket": w["ticket"],
                     "dense": w["dense"], "reinit_gap": w["gaps"]["reinit"], "random_gap": w["gaps"]["random"],
                     "matches": w["matches"], "wins": w["wins"]})
W = pd.DataFrame(by_round)
print(W.round(3).to_string(index=False))"""),
    ("md", """**Which layer's mask matters?** Not a registered claim: each fresh seed's test-round ticket retrained
with one layer's mask replaced by a random mask of that layer's density (`imp.layer_controls`), the
others kept. The accuracy each loses is the truth the scorecard's lottery Q3 row scores methods
against."""),
    ("code", """M = pd.DataFrame([{"seed": s, **{n: store.load(fresh[s][1][test_round - 1]).summary["final_test_acc"]
                                  - store.load(c).summary["final_test_acc"] for n, c in d.items()}}
                  for s, d in by_layer.items()]).set_index("seed")
print(f"accuracy lost at round {test_round} when one layer's mask is random (the others kept), per fresh seed")
print(M.round(3).to_string())
print("mean:", M.mean().round(3).to_dict())"""),
    ("md", """## 6 · Generalize: a second data set (not registered)

By default sklearn's digits: the issue measured that on digits every arm stays within noise down to
~7 % of the weights, a data set that cannot show the phenomenon in this range. At paper scale,
Fashion-MNIST with LeNet-300-100's shape (Frankle & Carbin's net on MNIST's harder twin, trained for this
notebook's step budget: 1,500 steps, far fewer than their ~50,000 iterations). Two seeds
(trained in section 2), as a look, not a claim."""),
    ("code", """D = table(second, ("reinit",), test_round) if second else pd.DataFrame(columns=["round", "arm", "test_acc"])
second_gap = float("nan")
if len(D):
    d = D[D["round"] == test_round].pivot(index="seed", columns="arm", values="test_acc")
    second_gap = float((d.ticket - d.reinit).mean())
    print(D.groupby(["round", "arm"]).test_acc.mean().unstack("arm").round(3).to_string())"""),
    ("md", """## Verdict

**Claims tested.** LT1: at the test round the ticket beats its reinitialised control (and, as a
control, a random mask) by more than 3 points; LT2: it matches the dense net within `margin`; LT3:
the first layer's surviving inputs are local per unit, beyond which inputs survive (and, as a control,
more local than one-shot magnitude pruning to the same density makes them); LT4: with
permuted inputs that locality is in the signal's original order, not the order the net sees.
**Evidence:** the `verdicts` line, computed in this run from fresh seeds only, Holm-corrected as one
family; `ticket_sparsity_limit` is the lowest density at which the ticket wins on the fresh seeds
(NaN: at none). **Confidence:** five fresh seeds, one width, one pruning rate; the digits look is two
seeds and not registered; the width sweep is exploratory (two seeds, the point rule). Disclosure: while this notebook was written, seeds 10–14 were run with 1,500
and then 1,000 steps per run and the first versions of these claims (at 1,500 steps LT4's control was
inconclusive); they are no longer fresh. The fresh seeds, 15–19, ran once, after the claims, the
controls (LT3's one-shot control replaced a random-mask control that is 1 by construction) and the
step count were fixed. The scorecard (09) scores this phenomenon's Q1–Q4. **Not built:** the GRU reference row; rewinding
with controls (the rewind sweep trains tickets only)."""),
    ("code", """wins = W[W.wins]
limit = float(wins.density.min()) if len(wins) else math.nan
at = W.loc[W.density.idxmin()] if wins.empty else wins.loc[wins.density.idxmin()]
dense_acc = F[F.arm == "dense"].test_acc
print(f"dense_test_acc = {dense_acc.mean():.3f} ({dense_acc.min():.3f}-{dense_acc.max():.3f} over {len(dense_acc)} seeds)")
print(f"ticket_sparsity_limit = {limit:.3f}")
print(f"reinit_gap = {at.reinit_gap[0]:.3f} ({at.reinit_gap[1]:.3f}-{at.reinit_gap[2]:.3f}) at density {at.density:.3f}")
print(f"random_mask_gap = {at.random_gap[0]:.3f} ({at.random_gap[1]:.3f}-{at.random_gap[2]:.3f}) at density {at.density:.3f}")
loc = T.set_index("id")
print(f"locality_vs_null = {loc.loc['LT3', 'mean']:.3f} ({loc.loc['LT3', 'ci_low']:.3f}-{loc.loc['LT3', 'ci_high']:.3f})")
print(f"permuted_locality_original_order = {loc.loc['LT4', 'mean']:.3f}")
print(f"{second_dataset}_reinit_gap_exploratory = {second_gap:.3f}")
for (a, o), v in R.groupby(["arch", "inputs"]).test_acc.mean().items():
    print(f"reference_{a}_{o}_test_acc = {v:.3f}")
print(f"width_sweep_point_limits = {dict(zip(S.scale, S.point_limit.round(3)))}")
print(f"rewind_sweep_last_round_ticket_acc = {K.iloc[-1].round(3).to_dict()}")
print(f"layer_mask_loss_at_test_round = {M.mean().round(3).to_dict()}")
print(f"reference_ordering_reproduced = {ordering}")
print(f"n_hypotheses = {len(T)}")
print(f"verdicts = {dict(zip(T.id, T.verdict))}")"""),
]


def build() -> nbformat.NotebookNode:
    cells = []
    for kind, source in CELLS:
        if kind == "md":
            cells.append(new_markdown_cell(source))
        else:
            cell = new_code_cell(source)
            if kind == "params":
                cell.metadata["tags"] = ["parameters"]
            cells.append(cell)
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (scidl)", "language": "python", "name": "python3"}
    return nb


if __name__ == "__main__":
    nbformat.write(build(), ROOT / "notebooks" / "08_iterate_lottery_tickets.ipynb")
