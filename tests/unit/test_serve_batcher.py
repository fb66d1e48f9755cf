"""Dynamic batching: the ``Batcher`` on its own, and batched handlers behind the app."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

import lepton as lp
from helpers import run_app
from lepton.errors import DeadlineExceededError, OverloadedError, RequestError, ServingError
from lepton.serve import Service
from lepton.serve._batcher import Batcher

Scenario = Callable[[httpx.AsyncClient, Any], Awaitable[Any]]


@pytest.fixture(autouse=True)
def _single_process_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)


# -- Batcher on its own ----------------------------------------------------------------------


def test_batcher_groups_concurrent_submissions_and_keeps_order():
    async def main() -> tuple[list[Any], list[list[int]]]:
        seen: list[list[int]] = []

        async def run(values: list[int]) -> list[int]:
            seen.append(list(values))
            return [v * 10 for v in values]

        batcher = Batcher(run, batch_size=4, max_wait_s=0.05, max_queue=100)
        deadline = time.monotonic() + 5
        futures = [batcher.submit(i, deadline) for i in range(10)]
        results = await asyncio.gather(*futures)
        await batcher.close()
        return results, seen

    results, seen = asyncio.run(main())
    assert results == [i * 10 for i in range(10)]
    assert [v for batch in seen for v in batch] == list(range(10))  # FIFO, each once
    assert all(len(batch) <= 4 for batch in seen)
    assert max(len(batch) for batch in seen) == 4


def test_batcher_refuses_beyond_max_queue_with_retry_after():
    async def main() -> list[Any]:
        async def run(values: list[int]) -> list[int]:
            return values

        batcher = Batcher(run, batch_size=8, max_wait_s=1.0, max_queue=2)
        deadline = time.monotonic() + 5
        futures = [batcher.submit(1, deadline), batcher.submit(2, deadline)]
        assert batcher.depth == 2
        with pytest.raises(OverloadedError) as info:
            batcher.submit(3, deadline)
        assert info.value.retry_after == 1.0
        assert info.value.status == 503
        assert "queue is full (2 waiting)" in info.value.message
        await batcher.close()  # what was still queued is refused, not left hanging
        return await asyncio.gather(*futures, return_exceptions=True)

    outcomes = asyncio.run(main())
    assert all(isinstance(o, OverloadedError) for o in outcomes)


def test_batcher_expires_queued_items_past_their_deadline_without_running_them():
    async def main() -> tuple[list[list[str]], Any, Any, Any]:
        seen: list[list[str]] = []
        gate = asyncio.Event()

        async def run(values: list[str]) -> list[str]:
            seen.append(list(values))
            if values == ["first"]:
                await gate.wait()
            return [v.upper() for v in values]

        batcher = Batcher(run, batch_size=4, max_wait_s=0.0, max_queue=10)
        first = batcher.submit("first", time.monotonic() + 5)
        await asyncio.sleep(0.01)  # "first" is running and holds the consumer
        late = batcher.submit("late", time.monotonic() + 0.05)
        fine = batcher.submit("fine", time.monotonic() + 5)
        await asyncio.sleep(0.1)  # "late" passes its deadline while queued
        gate.set()
        outcomes = await asyncio.gather(first, late, fine, return_exceptions=True)
        await batcher.close()
        return seen, *outcomes

    seen, first, late, fine = asyncio.run(main())
    assert first == "FIRST"
    assert isinstance(late, DeadlineExceededError)
    assert late.status == 504
    assert fine == "FINE"
    assert seen == [["first"], ["fine"]]  # "late" never reached the handler


def test_batcher_wrong_result_count_fails_the_whole_batch():
    async def main() -> list[Any]:
        async def run(values: list[int]) -> list[int]:
            return values[:-1]

        batcher = Batcher(run, batch_size=3, max_wait_s=0.05, max_queue=10)
        deadline = time.monotonic() + 5
        futures = [batcher.submit(i, deadline) for i in range(3)]
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        await batcher.close()
        return outcomes

    outcomes = asyncio.run(main())
    assert all(type(o) is ServingError for o in outcomes)
    assert "one result per input (got 2 for 3)" in str(outcomes[0])


def test_batcher_exception_result_fails_only_its_item_and_consumer_survives_errors():
    async def main() -> tuple[list[Any], list[Any]]:
        async def run(values: list[int]) -> list[Any]:
            if 99 in values:
                raise RuntimeError("the whole batch failed")
            return [ValueError(f"bad {v}") if v < 0 else v for v in values]

        batcher = Batcher(run, batch_size=4, max_wait_s=0.05, max_queue=10)
        deadline = time.monotonic() + 5
        mixed = await asyncio.gather(
            *[batcher.submit(v, deadline) for v in (1, -2, 3)], return_exceptions=True
        )
        failed = await asyncio.gather(batcher.submit(99, deadline), return_exceptions=True)
        after = await batcher.submit(5, deadline)  # the consumer keeps going after a failure
        await batcher.close()
        return mixed, [*failed, after]

    mixed, later = asyncio.run(main())
    assert mixed[0] == 1
    assert isinstance(mixed[1], ValueError)
    assert str(mixed[1]) == "bad -2"
    assert mixed[2] == 3
    assert isinstance(later[0], RuntimeError)
    assert later[1] == 5


def test_batcher_lone_request_is_not_held_for_the_window():
    async def main() -> float:
        async def run(values: list[int]) -> list[int]:
            return values

        batcher = Batcher(run, batch_size=32, max_wait_s=0.5, max_queue=10)
        started = time.monotonic()
        await batcher.submit(1, started + 5)
        elapsed = time.monotonic() - started
        await batcher.close()
        return elapsed

    assert asyncio.run(main()) < 0.1


# -- batched handlers behind the app -------------------------------------------------------


class Linear(Service):
    def setup(self) -> None:
        torch.manual_seed(0)
        self.model = torch.nn.Linear(4, 3).eval()
        self.sizes: list[int] = []

    @lp.handler(batch_size=16, max_wait_ms=20)
    def batched(self, x: list[list[float]]) -> list[list[float]]:
        self.sizes.append(len(x))
        with torch.inference_mode():
            return self.model(torch.tensor(x)).tolist()

    @lp.handler
    def single(self, x: list[float]) -> list[float]:
        with torch.inference_mode():
            return self.model(torch.tensor([x]))[0].tolist()

    @lp.handler(batch_size=8, max_wait_ms=20)
    async def abatched(self, x: list[list[float]]) -> list[list[float]]:
        await asyncio.sleep(0)
        self.sizes.append(-len(x))
        with torch.inference_mode():
            return self.model(torch.tensor(x)).tolist()


def _inputs(n: int) -> list[list[float]]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(n, 4, generator=generator).tolist()


def test_batched_results_equal_unbatched_under_concurrency():
    inputs = _inputs(40)

    async def scenario(client: httpx.AsyncClient, app: Any) -> tuple[list[Any], ...]:
        batched = await asyncio.gather(*[client.post("/batched", json={"x": x}) for x in inputs])
        single = await asyncio.gather(*[client.post("/single", json={"x": x}) for x in inputs])
        abatched = await asyncio.gather(*[client.post("/abatched", json={"x": x}) for x in inputs])
        assert all(r.status_code == 200 for r in [*batched, *single, *abatched])
        return [r.json() for r in batched], [r.json() for r in single], [r.json() for r in abatched]

    service = Linear()
    batched, single, abatched = run_app(service, scenario)
    with torch.inference_mode():
        expected = service.model(torch.tensor(inputs))
    torch.testing.assert_close(torch.tensor(batched), torch.tensor(single), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.tensor(batched), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.tensor(abatched), expected, rtol=1e-5, atol=1e-6)
    sync_sizes = [s for s in service.sizes if s > 0]
    async_sizes = [-s for s in service.sizes if s < 0]
    assert sum(sync_sizes) == 40
    assert sum(async_sizes) == 40
    assert max(sync_sizes) > 1  # the burst really was batched
    assert max(async_sizes) > 1
    assert max(sync_sizes) <= 16
    assert max(async_sizes) <= 8


def test_batch_sizes_show_in_metrics():
    inputs = _inputs(24)

    async def scenario(client: httpx.AsyncClient, app: Any) -> str:
        responses = await asyncio.gather(*[client.post("/batched", json={"x": x}) for x in inputs])
        assert all(r.status_code == 200 for r in responses)
        return (await client.get("/metrics")).text

    service = Linear()
    text = run_app(service, scenario)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    count = samples[("lepton_batch_size_count", (("route", "/batched"),))]
    total = samples[("lepton_batch_size_sum", (("route", "/batched"),))]
    assert total == 24
    assert count == len(service.sizes)
    assert total / count > 1
    assert samples[("lepton_requests_total", (("route", "/batched"), ("status", "200")))] == 24


class Window(Service):
    def setup(self) -> None:
        self.sizes: list[int] = []

    @lp.handler(batch_size=16, max_wait_ms=200)
    def f(self, x: list[int]) -> list[int]:
        self.sizes.append(len(x))
        return x


def _timed(client: httpx.AsyncClient, x: int) -> Awaitable[float]:
    async def one() -> float:
        started = time.perf_counter()
        r = await client.post("/f", json={"x": x})
        assert (r.status_code, r.json()) == (200, x)
        return time.perf_counter() - started

    return one()


def test_lone_request_under_no_load_is_dispatched_at_once():
    async def scenario(client: httpx.AsyncClient, app: Any) -> tuple[float, float]:
        first = await _timed(client, 1)
        burst = await asyncio.gather(*[_timed(client, i) for i in range(40)])
        await asyncio.sleep(1.2)  # a long idle spell (6 windows) after the burst
        lone = await _timed(client, 2)
        assert max(burst) < 0.6  # nobody waits much longer than one window
        return first, lone

    first, lone = run_app(Window(), scenario)
    assert first < 0.15  # a hold would take the whole 200 ms window
    assert lone < 0.15


def test_lone_request_shortly_after_a_burst_is_not_held_for_the_window():
    async def scenario(client: httpx.AsyncClient, app: Any) -> float:
        await asyncio.gather(*[_timed(client, i) for i in range(40)])
        await asyncio.sleep(0.3)  # idle: longer than the window
        return await _timed(client, 7)

    lone = run_app(Window(), scenario)
    assert lone < 0.15, f"a lone request waited {lone * 1000:.0f} ms of a 200 ms window"


def test_lone_request_never_waits_much_longer_than_the_window():
    async def scenario(client: httpx.AsyncClient, app: Any) -> list[float]:
        await asyncio.gather(*[_timed(client, i) for i in range(40)])
        waits = []
        for _ in range(2):
            await asyncio.sleep(0.25)
            waits.append(await _timed(client, 7))
        return waits

    waits = run_app(Window(), scenario)
    assert max(waits) < 0.6  # max_wait_ms * 3


class Faulty(Service):
    @lp.handler(batch_size=4, max_wait_ms=30)
    def short(self, x: list[int]) -> list[int]:
        return x[:-1]

    @lp.handler(batch_size=4, max_wait_ms=30)
    def not_a_list(self, x: list[int]) -> list[int]:
        return {"x": x}  # type: ignore[return-value]

    @lp.handler(batch_size=8, max_wait_ms=30)
    def picky(self, x: list[int]) -> list[Any]:
        out: list[Any] = []
        for v in x:
            if v == 13:
                out.append(RequestError("13 is unlucky; send another number"))
            elif v == 66:
                out.append(ValueError("internal detail 66"))
            else:
                out.append(v * 2)
        return out

    @lp.handler(batch_size=4, max_wait_ms=30)
    def explode(self, x: list[int]) -> list[int]:
        raise RuntimeError("secret batch failure")


@pytest.mark.parametrize("path", ["/short", "/not_a_list", "/explode"])
def test_broken_batch_fails_every_request_in_it_with_500(path):
    async def scenario(client: httpx.AsyncClient, app: Any) -> list[httpx.Response]:
        return await asyncio.gather(*[client.post(path, json={"x": i}) for i in range(4)])

    responses = run_app(Faulty(), scenario)
    for r in responses:
        assert r.status_code == 500
        error = r.json()["error"]
        assert "secret" not in r.text
        if path == "/explode":
            assert error["code"] == "internal_error"
        else:
            assert "one result per input" in error["message"]


def test_exception_in_place_of_a_result_fails_only_that_request():
    values = [1, 13, 2, 66, 3]

    async def scenario(client: httpx.AsyncClient, app: Any) -> list[httpx.Response]:
        return await asyncio.gather(*[client.post("/picky", json={"x": v}) for v in values])

    responses = run_app(Faulty(), scenario)
    assert [r.status_code for r in responses] == [200, 400, 200, 500, 200]
    assert [responses[i].json() for i in (0, 2, 4)] == [2, 4, 6]
    assert responses[1].json()["error"] == {
        "code": "bad_request",
        "message": "13 is unlucky; send another number",
    }
    assert responses[3].json()["error"]["code"] == "internal_error"
    assert "internal detail" not in responses[3].text


class Queue(Service):
    @lp.handler(batch_size=2, max_wait_ms=0, max_queue=2, timeout_s=5)
    def f(self, x: list[float]) -> list[float]:
        time.sleep(0.2)
        return x


def test_batched_route_sheds_load_beyond_max_queue():
    async def scenario(client: httpx.AsyncClient, app: Any) -> list[httpx.Response]:
        return await asyncio.gather(*[client.post("/f", json={"x": i}) for i in range(8)])

    responses = run_app(Queue(), scenario)
    statuses = [r.status_code for r in responses]
    assert set(statuses) == {200, 503}
    assert statuses.count(503) >= 3
    for r in responses:
        if r.status_code == 503:
            assert r.headers["retry-after"] == "1"
            assert r.json()["error"]["code"] == "overloaded"


class SlowBatch(Service):
    @lp.handler(batch_size=4, max_wait_ms=0, timeout_s=0.15)
    async def f(self, x: list[float]) -> list[float]:
        await asyncio.sleep(x[0])
        return x


def test_batched_request_past_its_deadline_is_504():
    async def scenario(client: httpx.AsyncClient, app: Any) -> httpx.Response:
        return await client.post("/f", json={"x": 0.5})  # the batch takes 0.5 s > 0.15 s

    r = run_app(SlowBatch(), scenario)
    assert r.status_code == 504
    assert r.json()["error"]["code"] == "deadline_exceeded"
