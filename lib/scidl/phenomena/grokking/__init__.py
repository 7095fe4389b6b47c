"""Grokking on modular arithmetic (Power et al. 2022; Nanda et al. 2023): test accuracy jumps long
after train accuracy, as a Fourier-multiplication circuit forms.

task.py: the task config (`ModularTask`, kind "grokking") and its pairs; model.py: Nanda's
transformer and a one-hot MLP; step.py: the fast last-position training loss; definition.py: the
operational definition; measures.py: the progress measures; fourier.py, circuits.py, zoom.py: the
zoom views; explain.py: `scidl.explain`. groups.py: composition in S_n (kind "group");
harmonics.py, algorithms.py, universality.py: the generalization readings of notebook 06.
"""
from scidl.phenomena.grokking import definition, measures, model, step, task, zoom
from scidl.phenomena.grokking import explain as explaining
from scidl.registry import Phenomenon, register

PHENOMENON = register(Phenomenon(
    kind="grokking", task=task.ModularTask, make_dataset=task.make_dataset, make_model=model.make_model,
    loss=step.last_position_loss, evaluate=definition.evaluate, summarize=definition.summarize,
    shows=definition.is_grokking, checkpoint_view=zoom.FourierView, measures=measures.MEASURES,
    archs=("transformer", "mlp"), explain=explaining.explain, check_claims=explaining.check_claims,
    q3_task=zoom.q3_task))

# Grokking on a non-abelian group (S_n composition): the same models, loss and definition.
from scidl.phenomena.grokking import groups  # noqa: E402

GROUP_PHENOMENON = register(Phenomenon(
    kind="group", task=groups.GroupTask, make_dataset=groups.make_dataset, make_model=model.make_model,
    loss=step.last_position_loss, evaluate=definition.evaluate, summarize=definition.summarize,
    shows=definition.is_grokking, archs=("transformer", "mlp")))
