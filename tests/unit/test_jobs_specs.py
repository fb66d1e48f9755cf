"""Job specs: typed, closed (no extra fields, no shell strings), ranges enforced, names
checked against the model zoo and the dataset catalog, with messages that say what fits."""

from __future__ import annotations

import json
import re
import signal
from typing import Any, get_args

import pytest
from pydantic import TypeAdapter, ValidationError

from lepton import data as lp_data
from lepton import models as lp_models
from lepton.platform.jobs._executor import Capacity, ExitStatus
from lepton.platform.jobs._files import _utf8_complete
from lepton.platform.jobs._specs import (
    STATES,
    CompressJob,
    EvaluateJob,
    FederatedJob,
    GraphJob,
    JobRequest,
    JobSpec,
    JobView,
    TrainJob,
    TuneJob,
)
from lepton.storage.schema import JobRow
from lepton.train import OPTIMIZERS, SCHEDULES


def request(**spec: Any) -> JobRequest:
    return JobRequest.model_validate({"spec": spec})


def error_text(exc: pytest.ExceptionInfo[ValidationError]) -> str:
    return "; ".join(f"{e['loc']}: {e['msg']}" for e in exc.value.errors())


def test_a_train_request_gets_the_documented_defaults():
    req = request(kind="train")
    assert isinstance(req.spec, TrainJob)
    assert (req.spec.model, req.spec.data, req.spec.epochs, req.spec.optimizer) == (
        "convnet", "mnist", 3, "adamw",
    )  # fmt: skip
    assert (req.priority, req.cpus, req.gpus, req.memory_mb, req.max_retries) == (
        0, 1.0, 0, 2048, 2,
    )  # fmt: skip
    assert req.spec.register_as is None
    assert req.spec.limit is None


def test_the_kind_picks_the_spec_type_and_unknown_kinds_are_refused():
    assert isinstance(request(kind="evaluate", model_ref="m:1").spec, EvaluateJob)
    space = {"lr": {"type": "float", "low": 0.001, "high": 0.1, "log": True}}
    assert isinstance(request(kind="tune", space=space).spec, TuneJob)
    for kind in ("shell", "bash"):
        with pytest.raises(
            ValidationError,
            match="expected tags: 'train', 'evaluate', 'tune', 'compress', 'federated'",
        ):
            request(kind=kind)


def test_a_compress_request_takes_the_recipe_defaults_and_refuses_nothing_to_do():
    req = request(kind="compress", model="mnist-convnet@production")
    assert isinstance(req.spec, CompressJob)
    assert (req.spec.quantize, req.spec.quant_format, req.spec.data, req.spec.prune) == (
        "static", "qdq", "mnist", None,
    )  # fmt: skip
    stored = req.spec.model_dump(mode="json")
    assert stored["kind"] == "compress"
    assert isinstance(TypeAdapter(JobSpec).validate_python(stored), CompressJob)  # round trip
    with pytest.raises(ValidationError, match="nothing to do: set quantize"):
        request(kind="compress", model="m:1", quantize=None)
    with pytest.raises(ValidationError, match="String should match pattern"):
        request(kind="compress", model="../etc/passwd")
    with pytest.raises(ValidationError, match="unknown dataset 'nope'; use one of mnist"):
        request(kind="compress", model="m:1", data="nope")


def test_a_federated_request_takes_the_recipe_defaults_and_checks_names():
    req = request(kind="federated", data="digits", clients=3, register="fed-digits")
    assert isinstance(req.spec, FederatedJob)
    assert (req.spec.model, req.spec.strategy, req.spec.partition, req.spec.mode) == (
        "convnet", "fedavg", "dirichlet", "simulation",
    )  # fmt: skip
    stored = req.spec.model_dump(mode="json")
    assert (stored["kind"], stored["register"]) == ("federated", "fed-digits")
    assert isinstance(TypeAdapter(JobSpec).validate_python(stored), FederatedJob)
    with pytest.raises(ValidationError, match="unknown model 'nope'"):
        request(kind="federated", model="nope")
    with pytest.raises(ValidationError, match="Input should be 'fedavg', 'fedprox' or 'fedadam'"):
        request(kind="federated", strategy="fedsgd")
    with pytest.raises(ValidationError, match="greater than or equal to 2"):
        request(kind="federated", clients=1)


def test_a_graph_request_takes_the_recipe_defaults_and_checks_names():
    req = request(kind="graph", dataset="kinships", model="complex", register="kin")
    assert isinstance(req.spec, GraphJob)
    assert (req.spec.dim, req.spec.epochs, req.spec.negatives, req.spec.loss) == (32, 40, 4, None)
    stored = req.spec.model_dump(mode="json")
    assert (stored["kind"], stored["register"], stored["model"]) == ("graph", "kin", "complex")
    assert isinstance(TypeAdapter(JobSpec).validate_python(stored), GraphJob)
    with pytest.raises(ValidationError, match="'nations', 'kinships' or 'umls'"):
        request(kind="graph", dataset="wordnet")
    with pytest.raises(ValidationError, match="'transe', 'distmult', 'complex' or 'rotate'"):
        request(kind="graph", model="transh")
    with pytest.raises(ValidationError, match="register"):
        request(kind="graph", register="Not A Name")


def test_a_tune_request_checks_its_space_and_its_cpus():
    with pytest.raises(ValidationError, match="parameter 'lr': Float needs low <= high"):
        request(kind="tune", space={"lr": {"type": "float", "low": 1, "high": 0}})
    with pytest.raises(ValidationError, match="Field required"):
        request(kind="tune")
    space = {"n": {"type": "int", "low": 1, "high": 3}}
    with pytest.raises(ValidationError, match="ask for cpus >= 4"):
        JobRequest.model_validate({"spec": {"kind": "tune", "space": space, "workers": 4}})
    ok = JobRequest.model_validate(
        {"spec": {"kind": "tune", "space": space, "workers": 4}, "cpus": 4}
    )
    assert isinstance(ok.spec, TuneJob)
    assert ok.spec.workers == 4
    with pytest.raises(ValidationError, match="discriminator"):
        JobRequest.model_validate({"spec": {"model": "mlp"}})


@pytest.mark.parametrize(
    "extra",
    [{"command": "rm -rf /"}, {"args": ["--x"]}, {"env": {"A": "1"}}, {"shell": "true"}],
)
def test_no_field_outside_the_spec_is_accepted(extra: dict[str, Any]):
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        request(kind="train", **extra)
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        JobRequest.model_validate({"spec": {"kind": "train"}, **extra})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("epochs", 0),
        ("epochs", 1001),
        ("batch_size", 0),
        ("lr", 0.0),
        ("lr", -1e-3),
        ("weight_decay", -0.1),
        ("seed", -1),
        ("limit", 0),
        ("early_stopping", 0),
        ("grad_clip", 0.0),
        ("optimizer", "lbfgs"),
        ("schedule", "linear"),
        ("val", "train"),
        ("epochs", "3"),  # strict: no strings for numbers
        ("epochs", True),
        ("epochs", 2.5),
    ],
)
def test_train_values_out_of_range_or_of_the_wrong_type_are_refused(field: str, value: Any):
    with pytest.raises(ValidationError, match=re.escape(field)) as exc:
        request(kind="train", **{field: value})
    assert any(e["loc"][-1] == field or field in str(e["loc"]) for e in exc.value.errors())


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("priority", 101),
        ("priority", -101),
        ("cpus", 0),
        ("gpus", -1),
        ("memory_mb", 0),
        ("max_retries", 11),
        ("max_retries", -1),
    ],
)
def test_request_values_out_of_range_are_refused(field: str, value: Any):
    with pytest.raises(ValidationError, match=re.escape(field)) as exc:
        JobRequest.model_validate({"spec": {"kind": "train"}, field: value})
    assert exc.value.errors()[0]["loc"] == (field,)


def test_a_whole_number_of_cpus_may_be_given_as_an_int():
    req = JobRequest.model_validate({"spec": {"kind": "train"}, "cpus": 2, "priority": 100})
    assert req.cpus == 2.0
    assert isinstance(req.cpus, float)


def test_an_unknown_model_is_refused_with_the_zoo_listed():
    with pytest.raises(ValidationError, match="unknown model 'gpt-5'") as exc:
        request(kind="train", model="gpt-5")
    text = error_text(exc)
    assert "unknown model 'gpt-5'" in text
    for name in lp_models.available_models():
        assert name in text


def test_an_unknown_dataset_is_refused_with_the_catalog_listed():
    with pytest.raises(ValidationError, match="unknown dataset 'imagenet'") as exc:
        request(kind="train", data="imagenet")
    text = error_text(exc)
    assert "unknown dataset 'imagenet'" in text
    for info in lp_data.list_datasets():  # ratings, texts and series apart
        assert (info.name in text) == (info.loads == "tensors"), info.name
    with pytest.raises(ValidationError, match="'movielens' is a ratings table"):
        request(kind="train", data="movielens")
    with pytest.raises(ValidationError, match=r"'rotten-tomatoes' is a text corpus: use lp\.text"):
        request(kind="train", data="rotten-tomatoes")
    with pytest.raises(ValidationError, match=r"'ucr-135' is a time series .* lp\.monitor"):
        request(kind="train", data="ucr-135")
    with pytest.raises(ValidationError, match="unknown dataset"):
        request(kind="evaluate", model_ref="m", data="../../etc/passwd")


def test_dataset_names_are_normalised_like_the_catalog_does():
    assert request(kind="train", data="Fashion_MNIST").spec.data == "fashion-mnist"


def test_config_keys_must_be_arguments_of_the_model():
    spec = request(kind="train", model="mlp", config={"hidden": [64, 32], "dropout": 0.2}).spec
    assert isinstance(spec, TrainJob)
    assert spec.config == {"hidden": [64, 32], "dropout": 0.2}
    with pytest.raises(ValidationError, match="are not arguments of 'mlp'") as exc:
        request(kind="train", model="mlp", config={"num_filters": [8]})
    text = error_text(exc)
    assert "['num_filters'] are not arguments of 'mlp'" in text
    assert "hidden" in text  # says what is accepted
    with pytest.raises(ValidationError, match=r"config\.hidden"):
        request(kind="train", model="mlp", config={"hidden": {"nested": 1}})
    with pytest.raises(ValidationError, match="at most 64"):
        request(kind="train", model="mlp", config={"hidden": [1] * 65})


def test_register_takes_a_valid_model_name_and_keeps_its_wire_name():
    spec = request(kind="train", register="mnist-mlp").spec
    assert isinstance(spec, TrainJob)
    assert spec.register_as == "mnist-mlp"
    assert spec.model_dump(mode="json")["register"] == "mnist-mlp"
    assert TrainJob(register="x1").register_as == "x1"
    with pytest.raises(ValidationError, match="invalid model name"):
        request(kind="train", register="Bad Name")
    with pytest.raises(ValidationError, match="Extra inputs"):
        request(kind="train", register_as="sneaky")  # only the wire name is accepted


@pytest.mark.parametrize("ref", ["mnist-convnet", "mnist-convnet:3", "mnist-convnet@production"])
def test_model_refs_in_the_registry_syntax_are_accepted(ref: str):
    spec = request(kind="evaluate", model_ref=ref, split="all").spec
    assert isinstance(spec, EvaluateJob)
    assert (spec.model_ref, spec.split) == (ref, "all")


@pytest.mark.parametrize("ref", ["", "../x", "a b", "x:y", "x@", "X", "a;rm -rf /", "x:1@y"])
def test_malformed_model_refs_are_refused(ref: str):
    with pytest.raises(ValidationError, match="model_ref"):
        request(kind="evaluate", model_ref=ref)


def test_the_literals_match_what_fit_accepts():
    fields = TrainJob.model_fields
    assert set(get_args(fields["optimizer"].annotation)) == set(OPTIMIZERS)
    schedule = get_args(fields["schedule"].annotation)[0]
    assert set(get_args(schedule)) == set(SCHEDULES)


def test_a_spec_survives_a_json_round_trip():
    adapter: TypeAdapter[TrainJob | EvaluateJob] = TypeAdapter(JobSpec)
    for spec in (
        TrainJob(model="mlp", epochs=2, limit=512, register="m", config={"hidden": [8]}),
        EvaluateJob(model_ref="m@production", data="iris", split="test", limit=10),
    ):
        assert adapter.validate_python(json.loads(json.dumps(spec.model_dump(mode="json")))) == spec


def test_a_job_view_is_json_safe_and_hides_the_handle():
    row = JobRow(
        id=7, kind="train", spec={"kind": "train"}, state="running", priority=1, cpus=1.0,
        gpus=0, memory_mb=512, attempts=1, max_retries=2, not_before=None, executor="local",
        handle={"pid": 123, "start_time": 1, "host": "h"}, result=None, error=None,
        run_id=None, created_by="alice", created_at=1.0, started_at=2.0, ended_at=None,
    )  # fmt: skip
    view = JobView.from_row(row)
    data = json.loads(view.model_dump_json())
    assert data["id"] == 7
    assert data["state"] == "running"
    assert "handle" not in data
    assert set(get_args(JobView.model_fields["state"].annotation)) == set(STATES)


def test_exit_statuses_describe_themselves():
    assert ExitStatus(code=1).describe() == "exit code 1"
    assert ExitStatus(signal=signal.SIGKILL).describe() == "killed by SIGKILL (out of memory?)"
    assert ExitStatus(signal=signal.SIGTERM).describe() == "killed by SIGTERM"
    assert ExitStatus().describe() == "ended"


def test_a_split_utf8_character_is_left_for_the_next_read():
    text = "naïve ✓ 🙂".encode()
    for cut in range(len(text) + 1):
        head = text[:cut]
        keep = _utf8_complete(head)
        head[:keep].decode("utf-8")  # never raises: only whole characters
        assert cut - keep < 4
        assert keep == cut or text[keep] >= 0xC0  # cut just before a lead byte


def test_the_capacity_of_this_machine_is_detected():
    cap = Capacity.detect()
    assert cap.cpus >= 1
    assert cap.gpus >= 0
    assert cap.memory_mb > 100
