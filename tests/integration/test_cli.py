"""The `lepton` command, run as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

import lepton as lp

pytestmark = pytest.mark.integration
LEPTON = str(Path(sys.executable).parent / "lepton")


def run(*args: str, home: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, LEPTON_HOME=str(home), COLUMNS="200")
    proc = subprocess.run([LEPTON, *args], env=env, capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_help_and_version(tmp_path: Path):
    out = run("--help", home=tmp_path).stdout
    for command in ("train", "demo", "data", "env", "db", "runs", "models"):
        assert command in out
    assert run("--version", home=tmp_path).stdout.strip() == f"lepton {lp.__version__}"
    assert "--epochs" in run("train", "--help", home=tmp_path).stdout


def test_env_json(tmp_path: Path):
    info = json.loads(run("env", "--json", home=tmp_path).stdout)
    assert info["versions"]["lepton"] == lp.__version__
    assert info["versions"]["torch"].startswith("2.")
    assert info["paths"]["LEPTON_HOME"] == str(tmp_path)
    assert info["devices"]["cpu_count"] >= 1


def test_data_list_and_show(tmp_path: Path):
    rows = json.loads(run("data", "list", "--json", home=tmp_path).stdout)
    names = {row["name"] for row in rows}
    assert {
        "mnist",
        "fashion-mnist",
        "digits",
        "iris",
        "wine",
        "breast-cancer",
        "diabetes",
    } <= names
    mnist = next(row for row in rows if row["name"] == "mnist")
    assert mnist["available"] is True
    shown = json.loads(
        run("data", "show", "iris", "--split", "all", "--json", home=tmp_path).stdout
    )
    assert shown["describe"]["rows"] == 150
    assert run("data", "show", "iris", home=tmp_path).stdout.count("setosa") >= 1


def test_train_json_and_save(tmp_path: Path):
    save = tmp_path / "saved"
    proc = run(
        "train",
        "--model",
        "mlp",
        "--data",
        "digits",
        "--epochs",
        "3",
        "--seed",
        "1",
        "--save",
        str(save),
        "--json",
        home=tmp_path,
    )
    result = json.loads(proc.stdout)
    assert result["test"]["accuracy"] > 0.85
    assert len(result["fit"]["history"]) == 3
    manifest = json.loads((save / "manifest.json").read_text())
    assert manifest["model"]["name"] == "mlp"
    assert manifest["dataset"]["fingerprint"].startswith("sha256:")
    model = lp.models.build(manifest["model"])
    model.load_state_dict(load_file(str(save / "model.safetensors")))
    test = lp.data.load("digits", split="test")
    assert lp.evaluate(model, test)["accuracy"] == pytest.approx(result["test"]["accuracy"])
    again = run("train", "-m", "mlp", "-d", "iris", "--save", str(save), home=tmp_path, check=False)
    assert again.returncode == 2
    assert "already exists" in again.stderr
    assert json.loads((save / "manifest.json").read_text()) == manifest  # left untouched


def test_train_resume_from_cli(tmp_path: Path):
    ckpt = tmp_path / "ckpt"
    base = ("train", "-m", "mlp", "-d", "iris", "--json", "--checkpoint-dir", str(ckpt))
    run(*base, "--epochs", "2", home=tmp_path)
    resumed = json.loads(run(*base, "--epochs", "4", "--resume", home=tmp_path).stdout)
    straight = json.loads(
        run("train", "-m", "mlp", "-d", "iris", "--json", "--epochs", "4", home=tmp_path).stdout
    )
    assert resumed["test"] == straight["test"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("train", "--model", "convnett", "--data", "digits"), "convnet"),
        (("train", "--data", "mnistt"), "mnist"),
        (("train", "-m", "mlp", "-d", "iris", "--optimizer", "lion"), "adamw"),
        (("train", "-m", "mlp", "-d", "iris", "-c", "dropout=2"), "dropout"),
        (("data", "show", "imagenet"), "mnist"),
        (("tune", "-p", "lr=normal(0,1)"), "cannot read --param 'lr=normal(0,1)'"),
        (("tune", "-d", "iris"), "say what to search: --param"),
        (("tune", "-p", "kernel=int(1,3)", "-d", "iris"), "neither arguments of model 'mlp'"),
        (("tune", "--show", "nope"), "no study named 'nope'"),
    ],
)
def test_errors_are_one_clear_line(tmp_path: Path, args: tuple[str, ...], message: str):
    proc = run(*args, home=tmp_path, check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error")
    assert message in proc.stderr


def test_db_status_and_upgrade(tmp_path: Path):
    before = json.loads(run("db", "status", "--json", home=tmp_path).stdout)
    assert before["current"] is None
    assert before["up_to_date"] is False
    assert "schema none -> " in run("db", "upgrade", home=tmp_path).stdout
    after = json.loads(run("db", "status", "--json", home=tmp_path).stdout)
    assert after["up_to_date"] is True
    assert after["url"] == f"sqlite:///{tmp_path / 'lepton.db'}"
    bad = run("db", "status", "--url", "postgresql+psycopg://x@127.0.0.1:1/y", home=tmp_path,
              check=False)  # fmt: skip
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr
    assert "LEPTON_DATABASE_URL" in bad.stderr


def test_training_is_tracked_and_runs_compare(tmp_path: Path):
    ids = []
    for lr in ("0.001", "0.01"):
        out = run("train", "-m", "mlp", "-d", "iris", "--epochs", "2", "--lr", lr, "--json",
                  home=tmp_path)  # fmt: skip
        ids.append(json.loads(out.stdout)["run"])
    listed = json.loads(run("runs", "list", "--json", home=tmp_path).stdout)
    assert [r["id"] for r in listed] == ids[::-1]
    assert {r["state"] for r in listed} == {"finished"}
    shown = json.loads(run("runs", "show", str(ids[0]), "--json", home=tmp_path).stdout)
    assert shown["params"]["fit"]["lr"] == 0.001
    assert "test_accuracy" in shown["metrics"]
    svg = tmp_path / "val_loss.svg"
    compared = json.loads(run("runs", "compare", *map(str, ids), "--plot", str(svg), "--json",
                              home=tmp_path).stdout)  # fmt: skip
    assert compared["params"]["fit.lr"] == [0.001, 0.01]
    assert svg.read_text().count("<polyline") == 2
    table = run("runs", "list", home=tmp_path).stdout
    assert "mlp-iris" in table
    assert "finished" in table
    missing = run("runs", "show", "999", home=tmp_path, check=False)
    assert missing.returncode == 2
    assert "lepton runs list" in missing.stderr


def test_register_from_train_and_manage_models(tmp_path: Path):
    out = json.loads(run("train", "-m", "mlp", "-d", "wine", "--epochs", "2", "--register",
                         "wine-mlp", "--json", home=tmp_path).stdout)  # fmt: skip
    assert out["registered"] == "wine-mlp:1"
    assert json.loads(run("models", "list", "--json", home=tmp_path).stdout) == [
        {"name": "wine-mlp", "versions": 1, "latest": 1, "description": ""}
    ]
    assert (
        "production" in run("models", "promote", "wine-mlp:1", "production", home=tmp_path).stdout
    )
    run("models", "alias", "wine-mlp:1", "champion", home=tmp_path)
    shown = json.loads(run("models", "show", "wine-mlp@production", "--json", home=tmp_path).stdout)
    assert shown[0]["aliases"] == ["champion"]
    assert shown[0]["manifest"]["metrics"]["accuracy"] == out["test"]["accuracy"]
    assert (
        "wine-mlp (version 1)"
        in run("models", "show", "wine-mlp:1", "--card", home=tmp_path).stdout
    )
    exported = tmp_path / "wine.onnx"
    assert (
        "max |diff|"
        in run("models", "export", "wine-mlp:1", "-o", str(exported), home=tmp_path).stdout
    )
    assert "registered wine-onnx:1" in run("models", "import-onnx", str(exported), "wine-onnx",
                                           home=tmp_path).stdout  # fmt: skip
    assert "deleted wine-mlp:1" in run("models", "delete", "wine-mlp:1", "-y", home=tmp_path).stdout
    gone = run("models", "show", "wine-mlp:1", home=tmp_path, check=False)
    assert gone.returncode == 2
    assert "lepton models" in gone.stderr


def test_tune_searches_registers_and_reads_the_study_back(tmp_path: Path):
    space = ("-p", "lr=log(1e-3,1e-1)", "-p", "optimizer=choice(adamw,sgd)",
             "-p", "momentum=float(0.5,0.99) if optimizer=sgd")  # fmt: skip
    args = ("tune", "-m", "mlp", "-d", "iris", *space, "-n", "5", "--epochs", "3",
            "--study", "iris-study", "--register", "iris-tuned")  # fmt: skip
    result = json.loads(run(*args, "--json", home=tmp_path).stdout)
    assert result["study"] == "iris-study"
    assert len(result["trials"]) == 5
    assert result["registered"] == "iris-tuned:1"
    for trial in result["trials"]:
        assert ("momentum" in trial["params"]) == (trial["params"]["optimizer"] == "sgd")
    shown = run("tune", "--show", "iris-study", home=tmp_path).stdout
    assert "best 5 of 5 trials" in shown
    assert f"best val_accuracy = {result['best_value']:.6g}" in shown
    assert "iris-study" in run("tune", "--list", home=tmp_path).stdout
    again = json.loads(run(*args[:-2], "--json", home=tmp_path).stdout)  # resumed: nothing to do
    assert [t["number"] for t in again["trials"]] == [0, 1, 2, 3, 4]


def test_privacy_budget_is_set_charged_and_enforced(tmp_path: Path):
    run("privacy", "set-budget", "diabetes", "--epsilon", "1", home=tmp_path)
    query = ("privacy", "query", "diabetes", "mean", "--column", "0", "--low", "-0.2",
             "--high", "0.2")  # fmt: skip
    assert "private=True" in run(*query, "--epsilon", "0.6", home=tmp_path).stdout
    refused = run(*query, "--epsilon", "0.6", home=tmp_path, check=False)
    assert refused.returncode == 2
    assert "Nothing was released or charged" in " ".join(refused.stderr.split())
    spent = json.loads(run("privacy", "budget", "diabetes", "--json", home=tmp_path).stdout)
    assert (spent["charges"], spent["spent"], spent["epsilon"]) == (1, 0.6, 1.0)
    history = json.loads(run("privacy", "charges", "diabetes", "--json", home=tmp_path).stdout)
    assert [c["what"] for c in history] == ["mean(0) laplace"]
