"""Data-parallel ``fit`` in real processes on 127.0.0.1 (gloo, one thread per process).

The reference is a one-process ``lp.fit`` of a small ConvNet (with BatchNorm) on 301 real
digits images: ``fit(workers=2)`` and a two-"node" ``lepton launch`` must train the same
weights with the same global batch (shuffled, with an uneven last batch), a rank that
fails must end the run at once with its error, and a taken port must be named as such.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

import lepton as lp
from lepton.errors import DistributedError, PortInUseError, WorkerFailedError

pytestmark = pytest.mark.integration

SAMPLES, BATCH, EPOCHS = 301, 32, 2  # 301 = 9 full batches and one of 13 (split 7 + 6)

SCRIPT = """
import os, sys
import torch
import lepton as lp
from safetensors.torch import save_file

if __name__ == "__main__":
    train = lp.data.load("digits", split="train").subset(slice(0, {samples}))
    torch.manual_seed(0)
    model = lp.models.ConvNet(num_classes=10, num_filters=[4], input_size=8, dropout=0.0)
    # each of the 2 workers takes half of the global batch of {batch}
    result = lp.fit(model, train, epochs={epochs}, batch_size={batch} // 2, seed=0, quiet=True,
                    per_worker_batch=True)
    if os.environ["RANK"] == "0":
        save_file(model.state_dict(), sys.argv[1])
        split = result.extra["distributed"]
        print("workers", split["workers"], "global batch", split["global_batch"])
"""


def _data() -> tuple[lp.data.Dataset, lp.data.Dataset]:
    train = lp.data.load("digits", split="train").subset(slice(0, SAMPLES))
    val = lp.data.load("digits", split="test").subset(slice(0, 99))
    return train, val


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return lp.models.ConvNet(num_classes=10, num_filters=[4], input_size=8, dropout=0.0)


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def reference() -> tuple[dict[str, torch.Tensor], lp.FitResult]:
    """One process, the same global batch and seed: the weights to match."""
    train, val = _data()
    model = _model()
    result = lp.fit(
        model, train, val, epochs=EPOCHS, batch_size=BATCH, seed=0, quiet=True, num_threads=1
    )
    return {k: v.clone() for k, v in model.state_dict().items()}, result


@pytest.fixture
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_two_workers_train_the_weights_of_one_process(
    reference: tuple[dict[str, torch.Tensor], lp.FitResult],
    one_thread: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LEPTON_HOME", str(tmp_path))
    weights, single = reference
    train, val = _data()
    model = _model()
    with lp.start_run("dp") as run:  # tracked from the caller's process, with rank 0's records
        result = lp.fit(
            model, train, val, epochs=EPOCHS, batch_size=BATCH, seed=0, quiet=True, workers=2,
            num_threads=1,
        )  # fmt: skip
    # the caller's model holds rank 0's weights (BatchNorm running statistics included)
    assert _max_diff(weights, model.state_dict()) <= 1e-5
    assert result.extra["distributed"] == {
        "workers": 2, "global_batch": BATCH, "per_worker_batch": False,
        "batch_per_worker": BATCH // 2, "backend": "gloo", "sync_batchnorm": True,
    }  # fmt: skip
    assert [r.epoch for r in result.history] == [1, 2]
    for ours, theirs in zip(result.history, single.history, strict=True):
        assert ours.train["loss"] == pytest.approx(theirs.train["loss"], abs=1e-5)
        assert ours.train["accuracy"] == theirs.train["accuracy"]
        # validation split over the ranks, gathered by torchmetrics: the same numbers
        for key in ("loss", "accuracy", "f1", "auc"):
            assert ours.val[key] == pytest.approx(theirs.val[key], abs=1e-5)
    assert multiprocessing.active_children() == []
    tracked = lp.tracking.get_run(run.id)
    assert tracked.params["fit"]["workers"] == 2
    assert lp.tracking.metric_history(run.id, "train_loss") == [
        (r.epoch, r.train["loss"]) for r in result.history
    ]


def test_a_checkpoint_resumes_with_another_number_of_workers(
    reference: tuple[dict[str, torch.Tensor], lp.FitResult], one_thread: None, tmp_path: Path
) -> None:
    """Epoch 1 on two workers, epoch 2 in one process: the weights of two epochs in one."""
    weights, _ = reference
    train, val = _data()
    lp.fit(
        _model(), train, val, epochs=1, batch_size=BATCH, seed=0, quiet=True, workers=2,
        num_threads=1, checkpoint_dir=tmp_path,
    )  # fmt: skip
    model = _model()
    result = lp.fit(
        model, train, val, epochs=EPOCHS, batch_size=BATCH, seed=0, quiet=True,
        checkpoint_dir=tmp_path, resume=True,
    )  # fmt: skip
    assert [r.epoch for r in result.history] == [1, 2]
    assert _max_diff(weights, model.state_dict()) <= 1e-5


def test_two_node_launch_trains_the_weights_of_one_process(
    reference: tuple[dict[str, torch.Tensor], lp.FitResult], tmp_path: Path
) -> None:
    weights, _ = reference
    script = tmp_path / "train.py"
    script.write_text(SCRIPT.format(samples=SAMPLES, epochs=EPOCHS, batch=BATCH))
    out = tmp_path / "weights.safetensors"
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lepton.cli",
                "launch",
                "--nnodes",
                "2",
                "--node-rank",
                str(rank),
                "--nproc-per-node",
                "1",
                "--rdzv-endpoint",
                f"127.0.0.1:{port}",
                "--rdzv-timeout",
                "60",
                str(script),
                str(out),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
        )
        for rank in (0, 1)
    ]
    outputs = [node.communicate(timeout=240)[0].decode() for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(outputs)
    assert f"workers 2 global batch {BATCH}" in "".join(outputs)
    assert _max_diff(weights, load_file(str(out))) <= 1e-5


class FailOnRank(lp.train.Callback):
    """Raises on one rank only, after ``after`` steps (or ends that process abruptly)."""

    def __init__(self, rank: int, after: int, stamp: Path, hard: bool = False) -> None:
        self.rank, self.after, self.stamp, self.hard = rank, after, stamp, hard

    def on_batch_end(self, state: lp.train.TrainState) -> None:
        if dist.get_rank() == self.rank and state.step >= self.after:
            self.stamp.write_text(str(time.time()))  # when it failed
            if self.hard:
                os._exit(3)
            raise ValueError(f"boom on rank {self.rank}")


@pytest.mark.parametrize("hard", [False, True], ids=["raises", "exits"])
def test_a_failing_rank_stops_the_run_with_its_error(
    hard: bool, one_thread: None, tmp_path: Path
) -> None:
    train, _ = _data()
    stamp = tmp_path / "failed-at"
    with pytest.raises(WorkerFailedError) as caught:
        lp.fit(
            _model(), train, epochs=50, batch_size=BATCH, seed=0, quiet=True, workers=2,
            num_threads=1, callbacks=[FailOnRank(1, after=3, stamp=stamp, hard=hard)],
        )  # fmt: skip
    stopped_after = time.time() - float(stamp.read_text())
    message = caught.value.message
    assert "worker rank 1 of 2" in message
    if hard:
        assert "exited with code 3" in message
    else:
        assert "ValueError: boom on rank 1" in message
        assert isinstance(caught.value.__cause__, ValueError)
    # 50 epochs would take minutes: rank 0 was stopped within seconds, none is left behind
    assert stopped_after < 15
    assert multiprocessing.active_children() == []


def test_a_port_in_use_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    train, _ = _data()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv("MASTER_PORT", str(port))
        with pytest.raises(PortInUseError, match=f"port {port} on 127.0.0.1 is in use"):
            lp.fit(_model(), train, epochs=1, batch_size=BATCH, quiet=True, workers=2)
        monkeypatch.delenv("MASTER_PORT")
        launched = subprocess.run(
            [sys.executable, "-m", "lepton.cli", "launch", "--nproc-per-node", "2",
             "--rdzv-endpoint", f"127.0.0.1:{port}", "train.py"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert launched.returncode == 2
    assert "port_in_use" in launched.stderr
    assert f"port {port}" in launched.stderr


def test_what_cannot_be_split_or_sent_is_refused_before_any_worker_starts() -> None:
    train, _ = _data()
    with pytest.raises(DistributedError, match="does not split evenly over 3 workers"):
        lp.fit(_model(), train, epochs=1, batch_size=32, quiet=True, workers=3)

    class Local(lp.train.Callback):  # defined in a function: not picklable
        pass

    with pytest.raises(DistributedError, match="cannot be sent"):
        lp.fit(_model(), train, epochs=1, batch_size=32, quiet=True, workers=2,
               callbacks=[Local()])  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_wrong_address_or_world_size_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """A torchrun-style environment (RANK, WORLD_SIZE, MASTER_ADDR/PORT) that cannot meet."""
    from lepton.errors import RendezvousError
    from lepton.train import _distributed

    train, _ = _data()
    monkeypatch.setattr(_distributed, "RENDEZVOUS_TIMEOUT_S", 2.0)
    port = _free_port()
    env = {"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(DistributedError, match=r"fit\(workers=3\) runs in a job of 2 processes"):
        lp.fit(_model(), train, epochs=1, batch_size=32, quiet=True, workers=3)
    # rank 0 hosts and waits for a second worker that never comes (WORLD_SIZE too large)
    with pytest.raises(RendezvousError, match="for 2 workers and not all came"):
        lp.fit(_model(), train, epochs=1, batch_size=32, quiet=True)
    # rank 1 looks for rank 0 where nobody listens
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(
        RendezvousError, match=f"could not reach the rendezvous at 127.0.0.1:{port}"
    ):
        lp.fit(_model(), train, epochs=1, batch_size=32, quiet=True)
    assert not dist.is_initialized()


def test_a_train_job_reserves_a_cpu_slot_per_worker() -> None:
    from pydantic import ValidationError

    from lepton.platform.jobs._specs import JobRequest, TrainJob

    spec = {"kind": "train", "model": "mlp", "data": "digits", "workers": 3}
    assert JobRequest.model_validate({"spec": spec}).cpus == 3.0  # JSON, as the API gets it
    assert JobRequest(spec=TrainJob(model="mlp", data="digits", workers=2)).cpus == 2.0
    assert JobRequest(spec=TrainJob(model="mlp", data="digits")).cpus == 1.0
    with pytest.raises(ValidationError, match="ask for cpus >= 2"):
        JobRequest(spec=TrainJob(model="mlp", data="digits", workers=2), cpus=1.0)
    with pytest.raises(ValidationError, match="one GPU per worker; ask for gpus >= 4"):
        JobRequest(spec=TrainJob(model="mlp", data="digits", workers=4), gpus=2)


def test_workers_are_forked_only_where_a_fork_is_safe() -> None:
    """Forked workers start in milliseconds, but OpenMP's pool does not survive a fork: a
    worker with several threads, after its parent used them, hangs. Those are spawned."""
    from lepton.train._spawn import _start_method

    cpu = torch.device("cpu")
    assert _start_method(cpu, 1) == "fork"
    assert _start_method(cpu, 2) == "spawn"
    assert _start_method(cpu, None) == "spawn"
    assert _start_method(torch.device("cuda"), 1) == "spawn"


def test_per_worker_batchnorm_is_an_option_and_changes_the_arithmetic(
    reference: tuple[dict[str, torch.Tensor], lp.FitResult], one_thread: None
) -> None:
    """``sync_batchnorm=False`` normalises each worker's half of the batch on its own (as
    Lightning and plain DDP do): it still trains, and the result records the choice, but
    it is no longer one process's arithmetic."""
    weights, _ = reference
    train, val = _data()
    model = _model()
    result = lp.fit(
        model, train, val, epochs=EPOCHS, batch_size=BATCH, seed=0, quiet=True, workers=2,
        num_threads=1, sync_batchnorm=False,
    )  # fmt: skip
    assert result.extra["distributed"]["sync_batchnorm"] is False
    assert _max_diff(weights, model.state_dict()) > 1e-4  # per-rank statistics differ
    assert result.history[-1].train["loss"] < result.history[0].train["loss"]
    assert result.history[-1].val["accuracy"] > 0.5
