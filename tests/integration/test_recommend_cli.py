"""``lepton recommend train / for / similar``, run as real subprocesses on real MovieLens,
against a registered version here and a running ``lepton deploy`` of it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import lepton as lp
from lepton.errors import DataSourceMissingError

pytestmark = pytest.mark.integration
LEPTON = str(Path(sys.executable).parent / "lepton")

from servers import running, start_platform, stop_platform  # noqa: E402


def run(*args: str, home: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, LEPTON_HOME=str(home), COLUMNS="200")
    proc = subprocess.run([LEPTON, *args], env=env, capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.mark.slow
def test_train_then_ask_for_and_similar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        ratings = lp.data.load("movielens", split="all")
    except DataSourceMissingError as exc:
        pytest.skip(f"MovieLens is not unpacked on this machine: {exc.message}")
    home = tmp_path / "home"
    trained = run(
        "recommend", "train", "--users", "50", "--factors", "8", "--epochs", "2",
        "--split", "temporal", "--register", "films", home=home,
    ).stdout  # fmt: skip
    assert "epoch 2/2: loss" in trained
    assert "temporal split" in trained
    assert "ndcg@10" in trained
    assert "registered as films:1" in trained

    monkeypatch.setenv("LEPTON_HOME", str(home))
    rec = lp.recommend.load("films:1")
    assert rec.model is not None
    table = ratings.item_table()
    titles = {item: title for item, (title, _, _) in table.items()}
    user = rec.model.user_ids[0]
    top = json.loads(run("recommend", "for", str(user), "--model", "films", "-k", "5",
                         "--json", home=home).stdout)  # fmt: skip
    assert [a["item"] for a in top["items"]] == [i for i, _ in rec.recommend(user, k=5)]
    assert top["items"][0]["title"] == titles[top["items"][0]["item"]]

    comedy = run("recommend", "for", str(user), "--model", "films:1", "--genre", "Comedy",
                 "-k", "3", home=home).stdout  # fmt: skip
    expected = rec.recommend(user, k=3, filter=lambda i: "Comedy" in table[i][2])
    for item, _ in expected:
        assert titles[item][:20] in comedy

    similar = json.loads(run("recommend", "similar", "1", "--model", "films", "-k", "4",
                             "--json", home=home).stdout)  # fmt: skip
    assert similar["title"] == "Toy Story"
    assert [a["item"] for a in similar["items"]] == [i for i, _ in rec.similar_items(1, 4)]
    unknown = run("recommend", "similar", "424242", "--model", "films", home=home, check=False)
    assert unknown.returncode != 0
    assert "unknown_id" in unknown.stdout + unknown.stderr
    assert "Traceback" not in unknown.stdout + unknown.stderr

    # a running deployment answers the same through --url
    with running("deploy", "films:1", tmp=tmp_path) as server:
        served = json.loads(run("recommend", "for", str(user), "--url", server.url, "-k", "5",
                                "--json", home=home).stdout)  # fmt: skip
        assert served == top


@pytest.mark.slow
def test_train_submit_runs_a_recommend_job_on_the_server(tmp_path: Path) -> None:
    try:
        lp.data.load("movielens", split="all")
    except DataSourceMissingError as exc:
        pytest.skip(f"MovieLens is not unpacked on this machine: {exc.message}")
    home = tmp_path / "home"
    home.mkdir()
    server = start_platform(home, tmp_path)
    try:
        env = dict(os.environ, LEPTON_HOME=str(home), LEPTON_SERVER_URL=server.url,
                   COLUMNS="200")  # fmt: skip
        args = ["recommend", "train", "--users", "30", "--factors", "4", "--epochs", "1",
                "--register", "served-films", "--submit", "--follow"]  # fmt: skip
        proc = subprocess.run([LEPTON, *args], env=env, capture_output=True, text=True,
                              timeout=600, check=False)  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "epoch 1/1: loss" in proc.stdout
        assert "registered as served-films:1" in proc.stdout
        assert "succeeded" in proc.stdout
        with server.client() as admin:
            jobs = admin.get("/api/v1/jobs").json()["items"]
            assert [j["kind"] for j in jobs] == ["recommend"]
            assert jobs[0]["spec"]["users"] == 30
            version = admin.get("/api/v1/models/served-films/versions/1")
            assert version.status_code == 200, version.text
    finally:
        stop_platform(server, home)
