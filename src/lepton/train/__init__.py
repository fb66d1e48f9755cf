"""Training and evaluation: ``fit``, ``evaluate``, callbacks and checkpoints."""

from lepton.train._callbacks import Callback, EarlyStopping, EpochRecord, TrainState
from lepton.train._fit import FitResult, fit, resolve_device
from lepton.train._metrics import evaluate
from lepton.train._optim import OPTIMIZERS, SCHEDULES
from lepton.train._private import PrivateTraining, TrainingPrivacy

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "Callback",
    "EarlyStopping",
    "EpochRecord",
    "FitResult",
    "PrivateTraining",
    "TrainState",
    "TrainingPrivacy",
    "evaluate",
    "fit",
    "resolve_device",
]
