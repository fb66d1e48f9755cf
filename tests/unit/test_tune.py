"""lp.tune on Optuna: search spaces from Python, JSON and the CLI; the function and model
forms; pruning through lp.fit; child runs; parallel workers; resume after kill -9; the
registered winner."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch

import lepton as lp
from helpers import wait_until
from lepton.errors import SearchSpaceError, TuneError
from lepton.storage import open_database
from lepton.tracking import get_run, list_runs, metric_history
from lepton.tune import (
    Categorical,
    Float,
    Int,
    Param,
    TrialContext,
    parse_space,
    space_from_json,
    space_to_json,
    tune,
)
from lepton.tune._optuna import storage_for

SPACE: dict[str, Param] = {
    "lr": Float(1e-4, 1e-1, log=True),
    "layers": Int(1, 4),
    "optimizer": Categorical(["adamw", "sgd"], when={"sgd": {"momentum": Float(0.5, 0.99)}}),
}


def quadratic(params: dict[str, Any]) -> float:
    """Top-level, so workers=2 can send it to its processes."""
    return float((params["x"] - 2.0) ** 2 + (params["y"] + 1.0) ** 2)


# -- search spaces ----------------------------------------------------------------------
def test_space_round_trips_through_json_and_matches_the_cli_form() -> None:
    as_json = space_to_json(SPACE)
    assert as_json["optimizer"]["when"]["sgd"]["momentum"] == {
        "type": "float", "low": 0.5, "high": 0.99, "log": False,
    }  # fmt: skip
    assert space_from_json(as_json) == SPACE
    cli = parse_space(
        ["lr=log(1e-4,1e-1)", "layers=int(1,4)", "optimizer=choice(adamw,sgd)",
         "momentum=float(0.5,0.99) if optimizer=sgd"]
    )  # fmt: skip
    assert cli == SPACE


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ({"lr": {"type": "float", "low": 1, "high": 0}}, "low <= high"),
        ({"lr": {"type": "float", "low": 0, "high": 1, "log": True}}, "log=True needs low > 0"),
        ({"lr": {"type": "gaussian", "low": 0, "high": 1}}, "type of float, int or categorical"),
        ({"n": {"type": "int", "low": 1.5, "high": 3}}, "must be integers"),
        ({"lr": {"type": "float", "low": 0, "high": 1, "scale": 2}}, "unknown keys"),
        ({"o": {"type": "categorical", "choices": []}}, "at least one choice"),
        ({"o": {"type": "categorical", "choices": ["a"], "when": {"b": {}}}}, "not one of"),
        (
            {
                "o": {
                    "type": "categorical",
                    "choices": ["a", "b"],
                    "when": {"a": {"o": {"type": "int", "low": 1, "high": 2}}},
                }
            },
            "appears twice",
        ),
        ({}, "JSON object of parameters"),
        ("{not json", "not valid JSON"),
    ],
)
def test_a_bad_space_gets_an_error_that_names_the_problem(raw: Any, match: str) -> None:
    with pytest.raises(SearchSpaceError, match=match):
        space_from_json(raw)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        (["lr=normal(0,1)"], "cannot read --param"),
        (["lr=log(0,1)"], "log=True needs low > 0"),
        (["m=float(0,1) if opt=sgd"], "before a parameter that depends on it"),
    ],
)
def test_a_bad_cli_param_is_explained(params: list[str], match: str) -> None:
    with pytest.raises(SearchSpaceError, match=match):
        parse_space(params)


# -- function form ----------------------------------------------------------------------
def test_tpe_finds_the_minimum_and_conditional_params_appear_only_with_their_parent() -> None:
    def objective(params: dict[str, Any]) -> float:
        assert ("momentum" in params) == (params["optimizer"] == "sgd")
        return float((params["lr"] - 0.01) ** 2 + params["layers"] + (params["optimizer"] == "sgd"))

    result = tune(objective, SPACE, n_trials=25, seed=1, study="conditional")
    assert result.best_params["optimizer"] == "adamw"
    assert result.best_params["layers"] == 1
    assert result.best_value is not None
    assert result.best_value < 1.01
    assert result.count("complete") == 25
    assert set(result.importances) <= {"lr", "layers", "optimizer", "momentum"}
    trials = list_runs(parent=result.run_id, limit=1000)
    assert len(trials) == 25
    assert {t.tags["lepton.study"] for t in trials} == {"conditional"}
    assert get_run(result.run_id).tags["lepton.kind"] == "study"


def test_tpe_starts_with_every_branch_and_shared_names_are_allowed_across_branches() -> None:
    space: dict[str, Param] = {
        "kind": Categorical(
            ["a", "b", "c"],
            when={"a": {"p": Float(0, 1)}, "b": {"p": Float(0, 1)}, "c": {"q": Int(1, 3)}},
        ),
    }
    result = tune(lambda p: float(p.get("p", 0.5)), space, n_trials=5, study="branches")
    assert [t.params["kind"] for t in result.trials[:3]] == ["a", "b", "c"]
    with pytest.raises(SearchSpaceError, match="two branches with different ranges"):
        tune(
            lambda p: 0.0,
            {"k": Categorical(["a", "b"], when={"a": {"p": Float(0, 1)}, "b": {"p": Float(0, 2)}})},
        )


def test_a_two_argument_objective_is_pruned_when_it_reports_poor_values() -> None:
    def objective(params: dict[str, Any], trial: TrialContext) -> float:
        value = 0.0
        for step in range(10):
            value = params["x"] * (step + 1)
            if trial.report(value, step):
                break
        return value

    result = tune(
        objective, {"x": Float(0.0, 1.0)}, n_trials=25, direction="minimize", seed=0,
        study="pruned-fn",
    )  # fmt: skip
    assert result.count("pruned") > 0
    pruned = next(t for t in result.trials if t.state == "pruned")
    run = get_run(pruned.run_id or -1)
    assert run.state == "finished"
    assert run.tags["lepton.trial_state"] == "pruned"


def test_multi_objective_returns_the_pareto_front() -> None:
    result = tune(
        lambda p: (p["x"] ** 2, (p["x"] - 1) ** 2), {"x": Float(-1, 2)},
        direction=["minimize", "minimize"], pruner="none", n_trials=15, study="pareto",
    )  # fmt: skip
    assert result.best_trial is None
    front = [t.values for t in result.trials if t.number in result.pareto]
    rest = [t.values for t in result.trials if t.number not in result.pareto]
    assert len(front) >= 2

    def dominates(a: list[float] | None, b: list[float] | None) -> bool:
        assert a is not None
        assert b is not None
        return all(x <= y for x, y in zip(a, b, strict=True)) and a != b

    assert not any(dominates(a, b) for a in front for b in front)
    assert all(any(dominates(a, b) for a in front) for b in rest)


def test_grid_sampler_walks_every_point() -> None:
    result = tune(
        lambda p: p["a"] * 10 + p["b"], {"a": Int(0, 2), "b": Categorical([0, 1])},
        sampler="grid", n_trials=6, study="grid",
    )  # fmt: skip
    assert sorted((t.params["a"], t.params["b"]) for t in result.trials) == [
        (a, b) for a in range(3) for b in (0, 1)
    ]


def test_two_workers_share_one_study() -> None:
    space = {"x": Float(-5, 5), "y": Float(-5, 5)}
    result = tune(quadratic, space, n_trials=6, workers=2, study="parallel", seed=3)
    assert result.count("complete") >= 6
    pids = {
        optuna_trial.user_attrs["lepton.pid"]
        for optuna_trial in optuna.load_study(
            study_name="parallel", storage=storage_for(open_database())
        ).trials
    }
    assert len(pids) == 2
    assert os.getpid() not in pids


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: tune(quadratic, {"x": Float(0, 1)}, n_trials=0), "n_trials must be"),
        (lambda: tune(quadratic, {"x": Float(0, 1)}, sampler="bayes"), "unknown sampler"),
        (
            lambda: tune(quadratic, {"x": Float(0, 1)}, direction="up"),  # type: ignore[arg-type]
            "direction must be",
        ),
        (lambda: tune(quadratic, {"x": Float(0, 1)}, register="m"), "needs the model form"),
        (lambda: tune(quadratic, {"x": Float(0, 1)}, sampler="grid"), "grid search needs"),
        (lambda: tune(lambda p: p["x"], {"x": Float(0, 1)}, workers=2), "cannot be sent"),
        (
            lambda: tune(quadratic, {"x": Float(0, 1)}, direction=["minimize", "minimize"]),
            "cannot prune multi-objective",
        ),
    ],
)
def test_bad_arguments_are_refused_before_any_trial(call: Any, match: str) -> None:
    with pytest.raises(TuneError, match=match):
        call()


def test_a_study_whose_trials_all_fail_says_why() -> None:
    def broken(params: dict[str, Any]) -> float:
        raise lp.errors.DivergedError(f"loss became nan at lr={params['lr']:.3g}")

    with pytest.raises(TuneError, match=r"all 3 trials .* failed; the first: .*loss became nan"):
        tune(broken, {"lr": Float(0.1, 1)}, n_trials=3, study="broken")


def test_resuming_with_another_space_is_refused() -> None:
    tune(quadratic, {"x": Float(0, 1), "y": Float(0, 1)}, n_trials=2, study="fixed-space")
    with pytest.raises(TuneError, match="exists with another search space"):
        tune(quadratic, {"x": Float(0, 2), "y": Float(0, 1)}, n_trials=4, study="fixed-space")


# -- resume after kill -9 -----------------------------------------------------------------
_STUCK = """
import threading
from lepton.tune import Float, tune

def objective(params):
    if len(done) >= 3:
        threading.Event().wait()  # the fourth trial never ends: the process is killed in it
    done.append(params["x"])
    return (params["x"] - 1) ** 2

done = []
tune(objective, {"x": Float(-5, 5)}, n_trials=10, study="crashy", seed=0)
"""


def test_a_study_resumes_after_its_process_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "stuck.py"
    script.write_text(textwrap.dedent(_STUCK))
    proc = subprocess.Popen([sys.executable, str(script)], env=dict(os.environ))
    try:
        storage = storage_for(open_database())

        def stuck_in_fourth() -> bool:
            try:
                trials = optuna.load_study(study_name="crashy", storage=storage).trials
            except KeyError:  # not created yet
                return False
            # RUNNING and owned: the trial is created a moment before its process is
            # recorded on it (a kill in between leaves a trial nobody can prove dead)
            states = [t.state.name for t in trials]
            return states == ["COMPLETE"] * 3 + ["RUNNING"] and "lepton.pid" in trials[3].user_attrs

        wait_until(stuck_in_fourth, 60, interval=0.2, message="the study to reach trial 4")
        before = optuna.load_study(study_name="crashy", storage=storage).trials
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

    result = tune(
        lambda p: (p["x"] - 1) ** 2, {"x": Float(-5, 5)}, n_trials=8, study="crashy", seed=0
    )
    assert [t.state for t in result.trials[:4]] == ["complete"] * 3 + ["fail"]
    assert [t.params for t in result.trials[:3]] == [t.params for t in before[:3]]
    assert result.count("complete") == 8  # the study holds what was asked, old trials kept
    study_run = get_run(result.run_id)
    assert study_run.state == "finished"  # reopened by the resume, ended by it
    assert len(list_runs(parent=result.run_id, limit=100)) == 9  # 3 + the killed one + 5


# -- model form ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits() -> tuple[lp.data.Dataset, lp.data.Dataset]:
    train, val = lp.data.load("digits", split="train").split(test_size=0.25, seed=0)
    return train.subset(slice(0, 600)), val


def test_model_form_prunes_poor_trials_early_and_registers_a_winner_that_reloads(
    digits: tuple[lp.data.Dataset, lp.data.Dataset],
) -> None:
    train, val = digits
    space: dict[str, Param] = {"hidden": Int(8, 64, log=True), "lr": Float(1e-5, 3e-2, log=True)}
    result = tune(
        space, train, val, model="mlp", epochs=3, n_trials=7, seed=0, study="digits-mlp",
        register="digits-tuned", fit_options={"batch_size": 64},
    )  # fmt: skip
    pruned = [t for t in result.trials if t.state == "pruned"]
    assert pruned
    assert all(t.epochs is not None and t.epochs < 3 for t in pruned)
    assert result.epochs_trained < 7 * 3
    assert result.best_value is not None
    assert result.best_value > 0.9
    pruned_run = get_run(pruned[0].run_id or -1)
    assert pruned_run.parent_id == result.run_id
    # its per-epoch metrics stop where the pruner stopped it
    assert len(metric_history(pruned_run.id, "val_accuracy")) == pruned[0].epochs

    assert result.registered == "digits-tuned:1"
    lineage = lp.registry.resolve("digits-tuned:1").manifest["lineage"]
    assert (lineage["study"], lineage["trial"]) == ("digits-mlp", result.best_trial)
    loaded = lp.load_model("digits-tuned:1")
    in_memory = result.best_model()
    x = val.features[:64]
    with torch.no_grad():
        assert torch.equal(loaded(x), in_memory(x))
    assert lp.evaluate(loaded, val)["accuracy"] == pytest.approx(result.best_value, abs=1e-6)


def test_model_form_checks_the_space_against_the_model(
    digits: tuple[lp.data.Dataset, lp.data.Dataset],
) -> None:
    train, val = digits
    with pytest.raises(SearchSpaceError, match="neither arguments of model 'mlp'"):
        tune({"kernel": Int(1, 3)}, train, val, model="mlp")
    with pytest.raises(SearchSpaceError, match="say which zoo model"):
        tune({"lr": Float(1e-3, 1e-2)}, train, val)
    with pytest.raises(lp.errors.RegistryError, match="model name"):
        tune({"hidden": Int(8, 16)}, train, val, model="mlp", register="Bad Name!")
    with pytest.raises(TuneError, match="two Datasets"):
        tune({"lr": Float(1e-3, 1e-2)}, train, model="mlp")


def test_reading_studies_of_a_database_without_any_creates_no_table() -> None:
    from sqlalchemy import inspect

    db = open_database()
    assert lp.tune.list_studies(database=db) == []
    with pytest.raises(lp.errors.StudyNotFoundError, match="no study named 'x'"):
        lp.tune.get_study("x", database=db)
    assert not inspect(db.engine).has_table("studies")  # a read left the schema alone
    lp.tune(lambda p: p["x"] ** 2, {"x": Float(-1, 1)}, n_trials=2, study="s", database=db)
    assert [s.name for s in lp.tune.list_studies(database=db)] == ["s"]
