"""The lottery ticket hypothesis (Frankle & Carbin 2019) on MNIST-1D: iterative magnitude pruning,
rewinding and its controls, as stored runs.

task.py: the task config (`LotteryTask`, kind "lottery": MNIST-1D generated locally, or sklearn's
digits; a fixed input permutation); model.py: the hooked fully connected net; definition.py: the
per-run metrics and the winning-ticket definition over seeds; imp.py: the ticket chain and its
controls as RunConfigs, linear mode connectivity and receptive-field locality. The pruning itself is
the core's (`scidl.masks`, TrainConfig's init_from / mask_from): any phenomenon's model can be pruned.
"""
from scidl.phenomena.lottery import definition, imp, model, task
from scidl.registry import Phenomenon, register

PHENOMENON = register(Phenomenon(
    kind="lottery", task=task.LotteryTask, make_dataset=task.make_dataset, make_model=model.make_model,
    loss=definition.training_loss, evaluate=definition.evaluate, summarize=definition.summarize,
    shows=definition.shows, archs=("mlp",), one_hot_mlp=False))
