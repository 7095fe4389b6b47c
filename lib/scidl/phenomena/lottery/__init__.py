"""The lottery ticket hypothesis (Frankle & Carbin 2019) on MNIST-1D: iterative magnitude pruning,
rewinding and its controls, as stored runs.

task.py: the task config (`LotteryTask`, kind "lottery": MNIST-1D generated locally, or sklearn's
digits; a fixed input permutation); model.py: the hooked nets, arch "mlp" (fully connected,
LeNet-300-100's shape by default) and arch "cnn" (MNIST-1D's 1-D CNN, the mnist1d repository's
ConvBase); definition.py: the per-run metrics and the winning-ticket definition over seeds; imp.py:
the ticket chain and its controls as RunConfigs, linear mode connectivity and receptive-field
locality; explain.py: the locality explanation of a ticket (`scidl.explain`, Q4); scoring.py: the
pieces of its Q2 and Q3 rows (features at the rewind point; which layer's mask matters most). The pruning itself is
the core's (`scidl.masks`, TrainConfig's init_from / mask_from): any phenomenon's model can be pruned.
"""
from scidl.phenomena.lottery import definition, explain, imp, model, scoring, task
from scidl.registry import Phenomenon, register

PHENOMENON = register(Phenomenon(
    kind="lottery", task=task.LotteryTask, make_dataset=task.make_dataset, make_model=model.make_model,
    loss=definition.training_loss, evaluate=definition.evaluate, summarize=definition.summarize,
    shows=definition.shows, archs=("mlp", "cnn"), one_hot_mlp=False, explain=explain.explain,
    check_claims=explain.check_claims))
