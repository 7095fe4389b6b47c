"""One-call explanations: `scidl.explain(run)` asks the run's phenomenon for its mechanism, times it,
and returns an `Explanation` that prints as short text and draws its figures in a notebook.

Faithfulness, the same scale for every phenomenon: with L the test loss of a model restricted to a
mechanism, L_full the full model's and L_chance the loss of a uniform guess (log of the number of
answers),
    faithfulness(mechanism) = (L_chance - L) / (L_chance - L_full),
1 when the mechanism alone does as well as the model, 0 when it does no better than chance. The
same number for random mechanisms of the same size is the control: an explanation counts only if
it clearly beats them (`Explanation.beats_random`). L comes from an intervention inside the network
(the rest of the model ablated or restricted), never from projecting the model's own output; random
mechanisms are drawn from all the candidates, the mechanism's own parts included.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import pandas as pd

from scidl.errors import ScidlError, check_mapping, check_number, check_type
from scidl.registry import phenomenon_of


def faithfulness(loss: float, full_loss: float, chance_loss: float) -> float:
    """Return (chance - loss) / (chance - full); ScidlError if undefined (the model is no better than chance)."""
    loss, full_loss, chance_loss = (check_number(name, v, 0) for name, v in  # finite, >= 0; numpy/torch scalars too
                                    (("loss", loss), ("full_loss", full_loss), ("chance_loss", chance_loss)))
    if not chance_loss - full_loss > 1e-9:
        raise ScidlError(f"full_loss={full_loss:.4g} is not allowed: the model is no better than chance "
                         f"({chance_loss:.4g}), so there is nothing to explain and faithfulness is undefined")
    return (chance_loss - loss) / (chance_loss - full_loss)


@dataclass
class Explanation:
    """A phenomenon's account of one model.

    claims: one sentence per claim, in reading order; parts: a table of the named parts (component,
    role, evidence); faithfulness: the mechanism's score, the random mechanisms' scores and the
    losses behind them; figures: callables that draw one matplotlib Figure each; seconds: wall time;
    template: the known mechanism the explanation instantiates ("" when the tool found it itself).
    """

    kind: str
    run: str
    claims: list[str]
    parts: pd.DataFrame
    faithfulness: dict[str, Any]
    figures: list[Callable[[], Any]] = field(default_factory=list)
    seconds: float = math.nan
    template: str = ""  # the known mechanism it instantiates, if any: apart from one the tool found itself

    def __post_init__(self) -> None:
        if isinstance(self.claims, (str, bytes)) or not isinstance(self.claims, (list, tuple)) \
                or not all(isinstance(c, str) for c in self.claims):
            raise ScidlError(f"claims={self.claims!r:.200} is not allowed: must be a list of sentences (strings)")
        check_type("parts", self.parts, pd.DataFrame, "a DataFrame of the named parts")
        f = check_mapping("faithfulness", self.faithfulness, "a mapping with score, random_scores, loss, "
                          "full_loss and chance_loss")
        missing = [k for k in ("score", "random_scores", "loss", "full_loss", "chance_loss") if k not in f]
        if missing:
            raise ScidlError(f"faithfulness={f!r:.200} is not allowed: it lacks {missing}")
        check_number("faithfulness['score']", f["score"])
        for k in ("loss", "full_loss", "chance_loss"):
            check_number(f"faithfulness[{k!r}]", f[k], 0)
        randoms = f["random_scores"]
        if isinstance(randoms, (str, bytes)) or not hasattr(randoms, "__iter__") or not len(list(randoms)):
            raise ScidlError(f"faithfulness['random_scores']={randoms!r} is not allowed: must be a non-empty list "
                             "(the control: random mechanisms of the same size)")
        for i, v in enumerate(randoms):
            check_number(f"faithfulness['random_scores'][{i}]", v)
        if not all(callable(d) for d in self.figures):
            raise ScidlError(f"figures={self.figures!r:.200} is not allowed: must be callables that draw a figure")

    @property
    def score(self) -> float:
        return float(self.faithfulness["score"])

    @property
    def random_score(self) -> float:
        """Return the best faithfulness among the random mechanisms of the same size."""
        return float(max(self.faithfulness["random_scores"]))

    def beats_random(self, margin: float = 0.2) -> bool:
        """Return whether the mechanism beats every random mechanism of its size by `margin`."""
        margin = check_number("margin", margin)
        return self.score - self.random_score > margin

    def text(self) -> str:
        f = self.faithfulness
        lines = [f"{self.kind} run {self.run}: explained in {self.seconds:.1f} s"
                 + (f"; template: {self.template}" if self.template else "; found by the tool, no template")]
        lines += [f"- {c}" for c in self.claims]
        lines.append(f"- faithfulness {self.score:.3f} (test loss {f['loss']:.4g} vs full {f['full_loss']:.4g}, "
                     f"chance {f['chance_loss']:.4g}); random mechanisms of the same size: "
                     f"{', '.join(f'{s:.3f}' for s in f['random_scores'])}"
                     + (f" (drawn from {f['random_pool']})" if "random_pool" in f else ""))
        if "intervention" in f:
            lines.append(f"- faithfulness measured by intervention: {f['intervention']}")
        if "oracle_score" in f:
            lines.append(f"- oracle (the same number of parts chosen by energy) {f['oracle_score']:.3f}: {f['oracle']}")
        if "logit_projection_score" in f:
            lines.append(f"- the model's own logits projected onto the mechanism (not an intervention): "
                         f"{f['logit_projection_score']:.3f}")
        return "\n".join(lines)

    __str__ = text

    def _repr_markdown_(self) -> str:
        return self.text().replace("\n- ", "\n\n- ")

    def show(self) -> None:
        """Print the text, the parts table and draw every figure (in a notebook, inline)."""
        print(self.text())
        print(self.parts.to_string(index=False))
        try:
            from IPython.display import display
        except ImportError:  # pragma: no cover - IPython ships with the notebook extra
            display = print
        for draw in self.figures:
            display(draw())


def explain(run, **options: Any) -> Explanation:
    """Return the run's phenomenon's explanation of its final model, timed."""
    if not hasattr(run, "config") or not hasattr(run, "load_model"):
        raise ScidlError(f"run={run!r} is not allowed: must be a stored Run (scidl.train or RunStore.load)")
    phenomenon = phenomenon_of(run.config)
    if phenomenon.explain is None:
        raise ScidlError(f"run of kind {phenomenon.kind!r} is not allowed: that phenomenon has no explain()")
    import inspect

    accepted = [n for n, prm in inspect.signature(phenomenon.explain).parameters.items()
                if prm.kind in (prm.KEYWORD_ONLY, prm.POSITIONAL_OR_KEYWORD)][1:]  # after the run
    unknown = [o for o in options if o not in accepted]
    if unknown:
        raise ScidlError(f"option {unknown[0]}={options[unknown[0]]!r} is not allowed: {phenomenon.kind}'s explain "
                         f"takes {accepted}")
    start = time.perf_counter()
    out = phenomenon.explain(run, **options)
    out.seconds = time.perf_counter() - start
    return out
