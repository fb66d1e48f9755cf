"""Hyper-parameter tuning on Optuna, and AutoML for tabular data.

Example:
    >>> import lepton as lp
    >>> from lepton.tune import Float, Int
    >>> space = {"hidden": Int(32, 256, log=True), "lr": Float(1e-4, 1e-1, log=True)}
    >>> result = lp.tune(space, train, val, model="mlp", epochs=5, n_trials=20)  # doctest: +SKIP
    >>> result.best_params  # doctest: +SKIP
    {'hidden': 181, 'lr': 0.0031}

Studies are stored in Lepton's metadata database (Optuna's RDB storage on the same URL);
each trial is a tracking run under the study's run.

The package itself is callable: ``lp.tune(...)`` is :func:`lepton.tune.tune`, and
``from lepton.tune import Float`` still imports from the package.
"""

from lepton._callable import make_callable as _make_callable
from lepton.tune._automl import automl
from lepton.tune._automl_result import AutoMLResult
from lepton.tune._objective import PruningCallback, TrialContext
from lepton.tune._queries import StudySummary, get_study, intermediate_values, list_studies
from lepton.tune._result import TrialRecord, TuneResult
from lepton.tune._space import (
    Categorical,
    Float,
    Int,
    Param,
    Space,
    parse_space,
    space_from_json,
    space_to_json,
)
from lepton.tune._study import tune

__all__ = [
    "AutoMLResult",
    "Categorical",
    "Float",
    "Int",
    "Param",
    "PruningCallback",
    "Space",
    "StudySummary",
    "TrialContext",
    "TrialRecord",
    "TuneResult",
    "automl",
    "get_study",
    "intermediate_values",
    "list_studies",
    "parse_space",
    "space_from_json",
    "space_to_json",
    "tune",
]

_make_callable(__name__, tune)  # lp.tune(...) is tune(...)
