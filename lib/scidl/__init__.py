"""scidl: a thin library behind research notebooks on the science of deep learning."""
from scidl.errors import ScidlError
from scidl.notebook import check_parameters
from scidl.config import ConfigError, ModelConfig, RunConfig, TaskConfig, TrainConfig, make_config
from scidl.phenomena import grokking_summary, is_grokking
from scidl.store import Run, RunStore
from scidl.tasks import OPERATIONS, make_dataset
from scidl.train import TrainingDiverged, configure_torch, evaluate, train

__all__ = [
    "ConfigError", "ScidlError", "check_parameters", "ModelConfig", "OPERATIONS", "Run", "RunConfig", "RunStore", "TaskConfig",
    "TrainConfig", "TrainingDiverged", "configure_torch", "evaluate", "grokking_summary",
    "is_grokking", "make_config", "make_dataset", "train",
]
