"""``lepton alerts`` against a real ``lepton server`` on 127.0.0.1: rules added, listed,
refused with the fix named, removed; alerts listed (the commands run in-process, the
server in its own process)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import Platform, start_platform, stop_platform
from typer.testing import CliRunner

from lepton.cli._alerts import alerts_app
from lepton.cli._alerts import console as cli_console
from lepton.errors import AlertRuleError, NotFoundError, PlatformError

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Platform, Path]]:
    home = tmp_path_factory.mktemp("alerts-home")
    platform = start_platform(home, home)
    try:
        yield platform, home / "admin-token"
    finally:
        stop_platform(platform, home)


def _alerts(server: tuple[Platform, Path], *args: str) -> tuple[int, str, BaseException | None]:
    platform, token = server
    where = ["--url", platform.url, "--token-file", str(token)]
    cli_console.width = 200  # made at import, with the terminal's width (80 under CI)
    result = CliRunner().invoke(alerts_app, [*args, *where], env={"COLUMNS": "200"})
    return result.exit_code, result.output, result.exception


def test_rules_are_added_listed_refused_and_removed(server: tuple[Platform, Path]) -> None:
    code, out, _ = _alerts(server, "rules", "add", "slow", "--metric", "latency_ms_p95",
                           "--threshold", "250", "--for", "30", "--severity", "critical",
                           "-d", "iris", "--min-requests", "20")  # fmt: skip
    assert code == 0, out
    assert "rule slow: latency_ms_p95 > 250 for 30 s on iris (critical, action none)" in out
    code, out, _ = _alerts(server, "rules", "add", "drifting", "--kind", "drift", "--threshold",
                           "0.5", "--action", "rollback", "--within", "300")  # fmt: skip
    assert code == 0, out

    code, out, _ = _alerts(server, "rules", "list", "--json")
    assert code == 0, out
    rules = {r["name"]: r for r in json.loads(out)}
    assert sorted(rules) == ["drifting", "slow"]
    assert rules["slow"]["window_s"] == 30.0  # left out: the server's default
    assert rules["drifting"]["deployment"] is None
    assert (rules["slow"]["min_requests"], rules["drifting"]["within_s"]) == (20, 300.0)
    code, out, _ = _alerts(server, "rules", "list")
    assert "latency_ms_p95 > 250" in out
    assert "drift > 0.5" in out

    # bad rules: refused here, or by the server with its message
    code, _, exc = _alerts(server, "rules", "add", "x", "--op", ">=", "--metric", "rps")
    assert isinstance(exc, AlertRuleError)
    assert "--op '>=' is not one of >, <" in exc.message
    code, _, exc = _alerts(server, "rules", "add", "x", "--metric", "cpu")
    assert isinstance(exc, PlatformError)
    assert exc.code == "alert_rule_error"  # the server's refusal, with its code
    assert "kind=metric needs metric= one of latency_ms_p95" in exc.message
    code, _, exc = _alerts(server, "rules", "add", "x", "--metric", "rps", "--webhook",
                           "http://example.org/hook")  # fmt: skip
    assert isinstance(exc, PlatformError)
    assert "must use https" in exc.message

    job = '{"kind": "train", "model": "mlp", "data": "iris", "register": "iris-mlp"}'
    retrain = ["--kind", "drift", "--threshold", "0.3", "--action", "retrain", "--json"]
    code, out, _ = _alerts(server, "rules", "add", "retrain", *retrain, "--retrain-job", job)
    assert code == 0, out
    assert json.loads(out)["retrain_job"]["model"] == "mlp"
    code, _, exc = _alerts(server, "rules", "add", "x", "--kind", "drift", "--action", "retrain",
                           "--retrain-job", "{kind: train}")  # fmt: skip
    assert isinstance(exc, AlertRuleError)
    assert "--retrain-job must be a JSON job spec" in exc.message
    code, _, _ = _alerts(server, "rules", "rm", "retrain")
    assert code == 0

    code, out, _ = _alerts(server, "rules", "rm", "slow")
    assert code == 0
    assert "removed rule slow" in out
    code, _, exc = _alerts(server, "rules", "rm", "slow")
    assert isinstance(exc, NotFoundError)
    assert "no alert rule named 'slow'" in exc.message
    code, out, _ = _alerts(server, "rules", "list", "--json")
    assert [r["name"] for r in json.loads(out)] == ["drifting"]


def test_alerts_list_answers_with_no_deployment_to_watch(server: tuple[Platform, Path]) -> None:
    code, out, _ = _alerts(server, "list", "--firing")
    assert code == 0, out
    assert "no alert firing" in out
    code, out, _ = _alerts(server, "list", "--json", "-d", "iris")
    assert code == 0, out
    assert json.loads(out) == []
