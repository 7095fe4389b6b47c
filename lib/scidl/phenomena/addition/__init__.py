"""The emergence of multi-digit addition in a small transformer (Quirke & Barez 2023; Lee et al.
2023; Nanda's 5-digit run): answer digits and carry sub-tasks are learned at distinct steps.

task.py: the task config (`AdditionTask`, kind "addition") and its tokenisation; model.py: the
hooked transformer; definition.py: per-digit curves, learned steps and carry-type accuracy;
measures.py: progress measures and the Q2 reading's agreement; zoom.py: attention, ablations,
carry patching and carry neurons; explain.py: `scidl.explain` (digit heads, the carry, faithfulness).
"""
from scidl.phenomena.addition import definition, measures, model, task, zoom
from scidl.phenomena.addition import explain as explaining
from scidl.registry import Phenomenon, register

PHENOMENON = register(Phenomenon(
    kind="addition", task=task.AdditionTask, make_dataset=task.make_dataset, make_model=model.make_model,
    loss=definition.training_loss, evaluate=definition.evaluate, summarize=definition.summarize,
    shows=definition.shows, measures=measures.MEASURES, archs=("transformer",),
    explain=explaining.explain, check_claims=explaining.check_claims, q3_task=zoom.q3_task))
