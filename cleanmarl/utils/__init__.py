"""The run layer shared by the four QMIX scripts, as CleanRL keeps cleanrl_utils beside its scripts:
one concern a module, no learning code. layout.py writes down the run directory that the scripts,
cleanmarl.sweep and cleanmarl.report share. A failure a user can fix raises ValueError with a
one-line message; the scripts print it."""

from cleanmarl.utils.checkpoints import load_networks, save_model
from cleanmarl.utils.evaluations import print_evaluation
from cleanmarl.utils.flags import startup_args
from cleanmarl.utils.resume import TrainingState
from cleanmarl.utils.stats import RunningStats
from cleanmarl.utils.system import check_buffer_memory, lazy_zeros, seed_everything, torch_device
from cleanmarl.utils.tracking import Run
from cleanmarl.utils.video import prepare_video

__all__ = [
    "Run",
    "RunningStats",
    "TrainingState",
    "check_buffer_memory",
    "lazy_zeros",
    "load_networks",
    "prepare_video",
    "print_evaluation",
    "save_model",
    "seed_everything",
    "startup_args",
    "torch_device",
]
