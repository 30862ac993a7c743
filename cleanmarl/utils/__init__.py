"""The run layer shared by the four QMIX scripts, as CleanRL keeps cleanrl_utils beside its scripts:
one concern a module, no learning code. layout.py writes down the run directory that the scripts,
cleanmarl.sweep and cleanmarl.report share. A failure a user can fix raises ValueError with a
one-line message; the scripts print it."""

from cleanmarl.utils.checkpoints import load_networks, save_model
from cleanmarl.utils.evaluations import print_evaluation
from cleanmarl.utils.flags import startup_args
from cleanmarl.utils.resume import TrainingState
from cleanmarl.utils.system import buffer_arrays, torch_device
from cleanmarl.utils.tracking import Run

__all__ = [
    "Run",
    "TrainingState",
    "buffer_arrays",
    "load_networks",
    "print_evaluation",
    "save_model",
    "startup_args",
    "torch_device",
]
