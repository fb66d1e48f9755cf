"""The articles' code runs as printed: every file in ``examples/articles/`` is run in its
own process, as a reader would run it, and what it prints is checked.

``docs/articles.md`` shows each file byte for byte (checked here too). The MNIST one runs
with ``LEPTON_ARTICLE_EPOCHS=1`` and ``LEPTON_ARTICLE_TRAIN_ROWS=2000`` (documented on
that page); ``benchmarks/articles.py`` runs it with the articles' own 10 epochs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
pytest.importorskip("pandas", reason="the articles' snippets build pandas tables")

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "articles"
PAGE = ROOT / "docs" / "articles.md"
NUMBER = r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?"


def run(name: str, cwd: Path, **env: str) -> str:
    """Runs ``examples/articles/<name>`` with the project's Python; its stdout."""
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_the_page_shows_every_file_exactly() -> None:
    page = PAGE.read_text(encoding="utf-8")
    shown = dict(re.findall(r"`examples/articles/(\w+\.py)`:\n\n```python\n(.*?)```", page, re.S))
    files = {p.name: p.read_text(encoding="utf-8") for p in EXAMPLES.glob("*.py")}
    assert set(files) >= {"mnist_convnet.py", "recommender.py", "privacy.py"}
    assert sorted(shown) == sorted(files), "docs/articles.md and examples/articles/ differ"
    for name, code in files.items():
        assert shown[name] == code, f"docs/articles.md shows {name} differently from the file"
        assert "leptonai" not in code


@pytest.mark.slow
def test_mnist_convnet_trains_and_evaluates_on_the_real_test_set(tmp_path: Path) -> None:
    # One thread unless the xdist share says otherwise: on a shared 2-core box, two
    # OpenMP threads per process spin against the other processes' threads.
    threads = os.environ.get("LEPTON_NUM_THREADS", "1")
    out = run(
        "mnist_convnet.py",
        tmp_path,
        LEPTON_ARTICLE_EPOCHS="1",
        LEPTON_ARTICLE_TRAIN_ROWS="2000",
        LEPTON_NUM_THREADS=threads,
        OMP_NUM_THREADS=threads,
    )
    # the two variables took effect: one epoch of 2,000 images in batches of 32
    assert "for 1 epochs of 63 steps" in out
    found = re.search(rf"^accuracy ({NUMBER})% on 10,000 images, loss ({NUMBER})$", out, re.M)
    assert found, out
    accuracy, loss = float(found[1]), float(found[2])
    assert accuracy > 80.0, out  # one epoch on 2,000 images; chance is 10%
    assert 0 < loss < 1.0


def test_recommender_predicts_a_rating_for_each_test_pair(tmp_path: Path) -> None:
    out = run("recommender.py", tmp_path)
    predictions = [float(v) for v in re.findall(NUMBER, out)]
    assert len(predictions) == 3, out  # one per (user, item) row of test_data
    assert all(1.0 <= p <= 5.0 for p in predictions), out  # the training ratings' range
    # item 103 is rated 1 or 2 by everyone, items 101 and 104 mostly 4 or 5
    assert predictions[2] < min(predictions[0], predictions[1]), out


def test_differential_privacy_releases_the_declared_columns_and_charges_the_budget(
    tmp_path: Path,
) -> None:
    out = run("privacy.py", tmp_path)
    assert "epsilon spent 0.1, left 0.9" in out
    found = re.search(r"Dataset\('table-dp', rows=(\d+), input_shape=\(2,\)", out)
    assert found, out  # the two declared columns, mean radius and target
    assert int(found[1]) > 0


def test_linear_regression_fits_a_pandas_table(tmp_path: Path) -> None:
    out = run("linear_regression.py", tmp_path)
    (prediction,) = (float(v) for v in re.findall(NUMBER, out))
    assert prediction == pytest.approx(245.0, abs=1e-6)  # price = 2 size + 10 rooms + 25
