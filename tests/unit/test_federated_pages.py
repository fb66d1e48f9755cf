"""The dashboard's federated pages, on a tracking run logged the way ``lp.federated.run``
logs one (one step per round), so no federation has to run here."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

from lepton.tracking import start_run


def _federated_run(name: str = "fl-<b>") -> int:
    params = {"strategy": "fedprox", "n_clients": 5, "rounds": 3, "mode": "processes"}
    run = start_run(name, params=params, tags={"lepton.kind": "federated"})
    for step, (acc, loss, clients, failed) in enumerate(
        [(0.1, 2.3, 0, 0), (0.81, 0.6, 5, 0), (0.9, 0.35, 4, 1), (0.94, 0.2, 4, 0)]
    ):
        values = {"global_accuracy": acc, "global_loss": loss, "clients": clients,
                  "clients_failed": failed, "bytes_up": clients * 1e6,
                  "bytes_down": 5e6 if step else 0.0, "round_seconds": 2.0}  # fmt: skip
        run.log_metrics(values, step=step)
    run.log_metrics({"final_accuracy": 0.94})
    run.end("finished")
    return run.id


def test_federated_run_page_shows_rounds_charts_and_clients(client: Any) -> None:
    run_id = _federated_run()
    page = client.get(f"/federated/{run_id}")
    assert page.status_code == 200
    text = page.text
    assert "fl-&lt;b&gt;" in text
    assert "<b>" not in text.split("<main", 1)[-1].split("fl-", 1)[0]
    for chart in ("chart-accuracy", "chart-loss", "chart-clients"):
        assert f'id="{chart}"' in text
    svgs = [ET.fromstring(s) for s in re.findall(r"<svg\b.*?</svg>", text, re.S)]
    assert len(svgs) >= 3
    rows = re.findall(r"<tr>\s*<td>(\d+)", text.split('id="rounds"', 1)[1])
    assert rows == ["0", "1", "2", "3"]
    assert "0.94" in text
    assert "fedprox over 5 clients" in text
    listing = client.get("/federated")
    assert listing.status_code == 200
    assert f'href="/federated/{run_id}"' in listing.text


def test_a_run_that_is_not_federated_is_not_found(client: Any) -> None:
    run = start_run("plain")
    run.end("finished")
    assert client.get(f"/federated/{run.id}").status_code == 404
    assert client.get("/federated/999999").status_code == 404
    empty = client.get("/federated")
    assert empty.status_code == 200
    assert "No federated runs yet" in empty.text
