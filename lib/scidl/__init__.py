"""scidl: a thin library behind research notebooks on the science of deep learning."""
from scidl._numerics import pin_mkl_branch

pin_mkl_branch()  # before torch's first matmul: the same bits on every AVX-512 machine

from scidl.errors import ScidlError  # noqa: E402  (imports after pinning MKL's code path)
from scidl.notebook import check_parameters  # noqa: E402
from scidl.config import ConfigError, ModelConfig, RunConfig, TaskConfig, TrainConfig, make_config  # noqa: E402
from scidl.phenomena import grokking_summary, is_grokking  # noqa: E402
from scidl.store import Run, RunStore  # noqa: E402
from scidl.tasks import OPERATIONS, make_dataset  # noqa: E402
from scidl.train import TrainingDiverged, configure_torch, evaluate, train  # noqa: E402

__all__ = [
    "ConfigError", "ScidlError", "check_parameters", "ModelConfig", "OPERATIONS", "Run", "RunConfig", "RunStore", "TaskConfig",
    "TrainConfig", "TrainingDiverged", "configure_torch", "evaluate", "grokking_summary",
    "is_grokking", "make_config", "make_dataset", "train",
]
