"""scidl: a thin library behind research notebooks on the science of deep learning."""
from scidl._numerics import pin_numeric_path

pin_numeric_path()  # before torch is imported: one numeric path on every x86-64 CPU with AVX2

from scidl.errors import ScidlError  # noqa: E402  (imports after pinning the numeric path)
from scidl.notebook import check_parameters  # noqa: E402
from scidl.config import ConfigError, ModelConfig, RunConfig, TrainConfig, make_config  # noqa: E402
from scidl.registry import PHENOMENA, get_phenomenon, make_dataset, make_model  # noqa: E402
from scidl.store import Run, RunStore  # noqa: E402
from scidl.train import TrainingDiverged, configure_torch, evaluate, train  # noqa: E402
from scidl.explain import Explanation, explain  # noqa: E402
import scidl.phenomena  # noqa: E402,F401  (registers every phenomenon)
from scidl.phenomena.grokking.definition import grokking_summary, is_grokking  # noqa: E402
from scidl.phenomena.grokking.task import OPERATIONS, ModularTask, TaskConfig  # noqa: E402

__all__ = [
    "ConfigError", "Explanation", "ScidlError", "check_parameters", "explain", "ModelConfig", "ModularTask", "OPERATIONS", "PHENOMENA",
    "Run", "RunConfig", "RunStore", "TaskConfig", "TrainConfig", "TrainingDiverged", "configure_torch",
    "evaluate", "get_phenomenon", "grokking_summary", "is_grokking", "make_config", "make_dataset",
    "make_model", "train",
]
