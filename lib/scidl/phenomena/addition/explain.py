"""Addition's explanation of one model (`scidl.explain(run)`): which head computes each answer digit,
which moves the carry, and how faithful that account is.

The mechanism is a set of (layer, head, answer position) cells: for each answer digit, the head that
attends most to that digit's operand column at the digit's prediction position (the carry-out digit
reads the top column), plus the head with the largest carry-patching effect at its position. The
restricted model mean-ablates every other head at every answer position (over the test prompts) and
keeps the MLPs; faithfulness (scidl.explain) is its test loss against the full model's and chance
(log 10). The control: as many cells drawn at random, `n_random` times.
"""
from __future__ import annotations

import math

import pandas as pd
import torch

from scidl import interventions
from scidl.errors import ScidlError
from scidl.explain import Explanation, faithfulness
from scidl.phenomena.addition import zoom
from scidl.phenomena.addition.task import make_dataset


def _cell(layer: int, head: int, pos: int) -> str:
    return f"blocks.{layer}.attn.hook_z:{head}@{pos}"


def _restricted_loss(model, tokens, labels, keep: set[str], cells: list[str]) -> float:
    hooks = [interventions.ablation_hook(c, "mean") for c in cells if c not in keep]
    return interventions.loss(model, tokens, labels, hooks)


def explain(run, n_random: int = 20, n_prompts: int = 512) -> Explanation:
    """Return the explanation of `run`'s final model (see the module docstring)."""
    for name, v, low in (("n_random", n_random, 1), ("n_prompts", n_prompts, 16)):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ScidlError(f"{name}={v!r} is not allowed: must be an integer >= {low}")
    model, data = run.load_model(), make_dataset(run.config.task)
    nd, cfg = model.n_digits, model.cfg
    train_rows = torch.nonzero(data.is_train).flatten()
    test_rows = torch.nonzero(~data.is_train).flatten()
    tokens, labels = data.tokens[test_rows], data.labels[test_rows]
    full = interventions.loss(model, tokens, labels)
    chance = math.log(10)

    att = zoom.attention_by_answer(model, data.tokens[train_rows[:n_prompts]])
    labels_at = zoom.position_labels(nd)
    digit_heads, parts, claims = {}, [], []
    for digit in range(nd + 1):
        column = min(digit, nd - 1)
        keys = {f"a{column}", f"b{column}"}
        a = att[(att.digit == digit) & att.key.isin(keys)].groupby(["layer", "head"]).weight.sum()
        (layer, head), weight = a.idxmax(), float(a.max())
        pos = model.answer_position(digit)
        digit_heads[digit] = _cell(layer, head, pos)
        parts.append({"component": digit_heads[digit], "role": f"reads column {column} for answer digit {digit}",
                      "evidence": f"attention from position {pos} ({labels_at[pos]}) to {sorted(keys)}: {weight:.2f}"})
        claims.append(f"answer digit {digit} ({'units' if digit == 0 else 'carry-out' if digit == nd else f'10^{digit}'}): "
                      f"layer {layer} head {head} reads a{column}, b{column} (attention {weight:.2f})")
    carry = zoom.carry_patching(model, data, train_rows)
    heads = carry[carry.component.str.contains("hook_z")]
    carry_cell, carry_effect = heads.component.iloc[0], float(heads.effect.iloc[0])
    row = zoom.ablation_by_carry(model, data, test_rows, [carry_cell.split("@")[0]]).iloc[0]
    parts.append({"component": carry_cell, "role": "moves the units carry to the tens digit",
                  "evidence": f"patching effect {carry_effect:.2f}; ablating the head drops carry cases by "
                              f"{row.carry_drop:.2f} more than no-carry cases"})
    claims.append(f"the carry: {carry_cell} restores {carry_effect:.0%} of the carry logit difference when patched; "
                  f"ablating that head costs carry cases {row.carry_drop:.2f} more accuracy than no-carry cases")

    cells = [_cell(l, h, model.answer_position(d)) for l in range(cfg.n_layers) for h in range(cfg.n_heads)
             for d in range(nd + 1)]
    mechanism = set(digit_heads.values()) | {carry_cell}
    if len(mechanism) >= len(cells):
        raise ScidlError(f"run {run.hash}: the mechanism names every one of the {len(cells)} head cells, so a "
                         "random mechanism of the same size is the same mechanism: no control")
    mech = _restricted_loss(model, tokens, labels, mechanism, cells)
    randoms = []
    for i in range(n_random):
        order = torch.randperm(len(cells), generator=torch.Generator().manual_seed(i))
        randoms.append({cells[j] for j in order[: len(mechanism)].tolist()})
    random_losses = [_restricted_loss(model, tokens, labels, r, cells) for r in randoms]
    faith = {"loss": mech, "full_loss": full, "chance_loss": chance, "score": faithfulness(mech, full, chance),
             "mechanism": sorted(mechanism), "random_cells": [sorted(r) for r in randoms],
             "random_losses": random_losses, "random_scores": [faithfulness(x, full, chance) for x in random_losses]}
    claims.append(f"keeping only these {len(mechanism)} of {len(cells)} head cells (the rest mean-ablated, MLPs kept): "
                  f"test loss {mech:.3g} (full {full:.3g}, chance {chance:.3g})")

    def attention_figure():
        from scidl import plots  # matplotlib only when drawn

        top = carry.head(10)
        return plots.plot_effects(top, title=f"run {run.hash}: carry patching, top components")

    return Explanation("addition", run.hash, claims, pd.DataFrame(parts), faith, [attention_figure],
                       template="digit heads and a carry head (Quirke & Barez 2023), found per model (a known template)")


def check_claims(run, explanation: Explanation, example: tuple[int, int] = (17, 25), min_drop: float = 0.1
                 ) -> pd.DataFrame:
    """Return addition's Q4 checks of an explanation, each an intervention with a predicted outcome on
    the test prompts (heads mean-ablated at their position over the test batch): ablating digit d's
    head lowers digit d's accuracy by >= `min_drop`; ablating the carry head costs carry prompts
    >= `min_drop` more accuracy than no-carry prompts; and on `example` (a + b with a units carry,
    "why is 17 + 25 = 42"), ablating the carry head drops the carry from the tens digit (the model
    then answers as if the units did not carry); and the named cells beat every random mechanism of
    the same size by 0.2 faithfulness. Columns claim, predicted, observed, passed."""
    from scidl.phenomena.addition.task import encode

    model, data = run.load_model(), make_dataset(run.config.task)
    nd = model.n_digits
    test_rows = torch.nonzero(~data.is_train).flatten()
    tokens, labels = data.tokens[test_rows], data.labels[test_rows]
    clean = zoom.answer_correct(model, tokens, labels).float().mean(0)  # per digit, units first
    rows = []
    cells = explanation.faithfulness["mechanism"]
    digit_cells = {int(r.role.split()[-1]): r.component for r in explanation.parts.itertuples()
                   if r.role.startswith("reads column")}
    for digit, cell in sorted(digit_cells.items()):
        ablated = zoom.answer_correct(model, tokens, labels, [interventions.ablation_hook(cell, "mean")]).float().mean(0)
        drop = float(clean[digit] - ablated[digit])
        rows.append({"claim": f"{cell} computes answer digit {digit}", "predicted": f"ablating it drops digit {digit}'s "
                     f"test accuracy by >= {min_drop}", "observed": f"{drop:.3f}", "passed": drop >= min_drop})
    carry_cell = next(r.component for r in explanation.parts.itertuples() if "carry" in r.role)
    row = zoom.ablation_by_carry(model, data, test_rows, [carry_cell]).iloc[0]
    rows.append({"claim": f"{carry_cell} moves the units carry", "predicted": f"ablating it costs carry prompts >= "
                 f"{min_drop} more accuracy than no-carry prompts", "observed": f"{row.carry_drop:.3f}",
                 "passed": bool(row.carry_drop >= min_drop)})
    a, b = example
    if (a % 10) + (b % 10) < 10 or max(a, b) >= 10 ** nd:
        raise ScidlError(f"example={example!r} is not allowed: its units must carry and both operands have "
                         f"at most {nd} digits")
    ex, _ = encode(torch.tensor([a]), torch.tensor([b]), nd)
    batch = torch.cat([ex, tokens])  # the example first; the mean ablation is over the test prompts too
    with torch.no_grad():
        clean_ans = model.answer_logits(model(batch))[0].argmax(-1)
        hook = interventions.ablation_hook(carry_cell, "mean")
        ablated_ans = model.answer_logits(model.run_with_hooks(batch, fwd_hooks=[hook]))[0].argmax(-1)
    number = lambda digits_: int("".join(str(int(d)) for d in digits_))
    no_carry = (a // 10 % 10 + b // 10 % 10) % 10  # the tens digit without the units carry
    tens = int(ablated_ans[-2])  # answers run carry-out first; the tens digit is second from last
    rows.append({"claim": f"why {a} + {b} = {a + b}: the carry head adds the units carry to the tens digit",
                 "predicted": f"clean answer {a + b}; with the carry head ablated the tens digit becomes {no_carry}",
                 "observed": f"clean {number(clean_ans)}, ablated {number(ablated_ans)}",
                 "passed": number(clean_ans) == a + b and tens == no_carry})
    rows.append({"claim": "the named head cells are a faithful mechanism",
                 "predicted": "faithfulness beats every random same-size mechanism by >= 0.2",
                 "observed": f"{explanation.score:.3f} vs best random {explanation.random_score:.3f}",
                 "passed": explanation.beats_random(0.2)})
    return pd.DataFrame(rows)
