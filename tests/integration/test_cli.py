"""The command line and the embedded stack, as a user meets them."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import nats
import pytest

from shared.bus import EmbeddedNats, ensure_topology
from shared.cli import main, new_campaign_id
from shared.contracts import (
    BaselineReproduced,
    Budget,
    CampaignCompleted,
    CampaignStarted,
    Event,
    Objective,
    ObjectiveSet,
)
from shared.embedded import Stack, StackError
from shared.subjects import Subjects

REPO_ROOT = Path(__file__).resolve().parents[2]


def reachable(url: str) -> bool:
    host, port = url.rsplit("/", 1)[-1].rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """NATS_URL when it answers, else a private server for this module."""
    url = os.environ.get("NATS_URL", "nats://127.0.0.1:4222")
    if reachable(url):
        yield url
        return
    server = EmbeddedNats(tmp_path_factory.mktemp("nats"))
    try:
        yield server.start()
    finally:
        server.stop()


# ---------------------------------------------------------------- no server needed


def test_run_on_a_missing_folder_exits_2_before_starting_anything(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "NATS_URL"}
    data_dir = tmp_path / "state"

    finished = subprocess.run(
        [sys.executable, "-m", "shared.cli", "run", str(tmp_path / "no-such-paper"), "--data-dir", str(data_dir)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60,
    )

    assert finished.returncode == 2
    assert "no-such-paper does not exist" in finished.stderr
    assert not data_dir.exists()


def test_campaign_ids_are_slugs_of_the_folder_name(tmp_path: Path) -> None:
    paper = tmp_path / "My Paper (v2)"
    paper.mkdir()

    first, second = new_campaign_id(paper), new_campaign_id(paper)

    assert first.startswith("My-Paper-v2-") and len(first) == len("My-Paper-v2-") + 8
    assert first != second


def test_health_without_a_server_fails_within_its_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("NATS_URL", f"nats://127.0.0.1:{port}")

    started = time.monotonic()
    code = main(["health", "scheduler", "--timeout", "1"])

    assert code != 0
    assert time.monotonic() - started < 3


# ---------------------------------------------------------------- with a server


@pytest.mark.nats
def test_health_of_a_service_that_is_not_running_fails_within_its_timeout(nats_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("NATS_URL", nats_url)
    monkeypatch.setenv("AUTOSOTA_NAMESPACE", "nobodyhome")

    started = time.monotonic()
    code = main(["health", "runner-9", "--timeout", "1"])

    assert code == 1
    assert time.monotonic() - started < 3
    assert "runner-9 is not ready" in capsys.readouterr().err


@pytest.mark.nats
def test_stack_with_only_nats_starts_its_server_and_stops_it(tmp_path: Path) -> None:
    stack = Stack(tmp_path, services=())

    with stack:
        server = stack.nats
        assert server is not None and server.process is not None
        assert asyncio.run(jetstream_answers(stack.url))
    assert server.process.poll() is not None
    assert not reachable(server.url)
    assert (tmp_path / "nats").is_dir()


@pytest.mark.nats
def test_stack_restarts_a_crashed_service_and_restarts_on_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Stack(tmp_path, services=("resource",), ready_timeout=60) as stack:
        monkeypatch.setenv("NATS_URL", stack.url)
        assert main(["health", "resource", "--timeout", "5"]) == 0
        crashed = stack.pid("resource")
        assert crashed is not None

        # a crash is noticed and the service comes back on its own
        os.kill(crashed, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while stack.restarts["resource"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stack.restarts["resource"] == 1
        stack.wait_ready(["resource"], timeout=30)
        assert stack.pid("resource") not in (None, crashed)

        # a test kill stays down until restarted
        stack.kill("resource")
        assert stack.pid("resource") is None
        assert main(["health", "resource", "--timeout", "1"]) == 1
        stack.restart("resource")
        assert main(["health", "resource", "--timeout", "5"]) == 0
        last = stack.processes["resource"].process
    assert last is not None and last.poll() is not None
    assert "FastStream app" in (tmp_path / "logs" / "resource.log").read_text()


async def jetstream_answers(url: str) -> bool:
    client = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0, allow_reconnect=False)
    try:
        await client.jetstream().account_info()
        return True
    finally:
        await client.close()


# ---------------------------------------------------------------- run, replay, events, status


def stamp(producer: str, event: Event, second: int) -> Event:
    return event.model_copy(update={"event_id": uuid4(), "producer": producer, "time": datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=second)})


def scripted_campaign(request: dict, outcome: str) -> list[Event]:
    campaign = request["campaign"]
    objective = Objective(
        title="Scripted", method="m", primary_metric="loss", direction="minimize", reported_value=1.0, reported_source="t1",
        protected_paths=["evaluate.py"], train_command="python train.py", evaluate_command="python evaluate.py",
    )
    return [
        stamp("scheduler", CampaignStarted(campaign=campaign, paper_path=request["paper_path"], budget=Budget.model_validate(request["budget"])), 0),
        stamp("objective", ObjectiveSet(campaign=campaign, objective=objective, snapshot_sha256="0" * 64), 1),
        stamp("scheduler", BaselineReproduced(campaign=campaign, metric="loss", values=[1.1, 1.2], mean=1.15, std=0.07, reported_value=1.0, gap_to_reported=0.15), 2),
        stamp("scheduler", CampaignCompleted(campaign=campaign, outcome=outcome, reason=f"scripted {outcome}", idea_experiments=0), 3),
    ]


class ScriptedScheduler(threading.Thread):
    """Answers the start request like the scheduler, then publishes a scripted history."""

    def __init__(self, url: str, subjects: Subjects, outcome: str) -> None:
        super().__init__(daemon=True)
        self.url, self.subjects, self.outcome = url, subjects, outcome
        self.listening = threading.Event()
        self.requests: list[dict] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._done: asyncio.Event | None = None

    def run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop, self._done = asyncio.get_running_loop(), asyncio.Event()
        client = await nats.connect(self.url)
        js = client.jetstream()
        await ensure_topology(js, self.subjects)

        async def on_start(msg: nats.aio.msg.Msg) -> None:
            request = json.loads(msg.data)
            self.requests.append(request)
            await msg.respond(json.dumps({"campaign": request["campaign"], "accepted": True, "existing": False}).encode())
            for event in scripted_campaign(request, self.outcome):
                subject = self.subjects.event(event.owner, event.campaign, event.event_type)
                await js.publish(subject, event.model_dump_json().encode())

        await client.subscribe(self.subjects.control("campaign.start"), cb=on_start)
        await client.flush()
        self.listening.set()
        await self._done.wait()
        await client.close()

    def stop(self) -> None:
        if self._loop and self._done:
            self._loop.call_soon_threadsafe(self._done.set)
        self.join(10)


async def delete_topology(url: str, subjects: Subjects) -> None:
    client = await nats.connect(url)
    js = client.jetstream()
    for stream in (subjects.events_stream, subjects.work_stream, subjects.telemetry_stream, f"OBJ_{subjects.artifacts_bucket}"):
        try:
            await js.delete_stream(stream)
        except Exception:  # noqa: BLE001, S110 - already gone
            pass
    await client.close()


@pytest.mark.nats
@pytest.mark.parametrize(("outcome", "exit_code"), [("certified", 0), ("not_improved", 0), ("failed", 1)])
def test_run_follows_the_campaign_and_replay_prints_the_same_summary(
    outcome: str, exit_code: int, nats_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    namespace = f"cli{uuid4().hex[:10]}"
    subjects = Subjects(namespace)
    monkeypatch.setenv("NATS_URL", nats_url)
    monkeypatch.setenv("AUTOSOTA_NAMESPACE", namespace)
    paper = tmp_path / "paper"
    paper.mkdir()
    scheduler = ScriptedScheduler(nats_url, subjects, outcome)
    scheduler.start()
    assert scheduler.listening.wait(20)
    try:
        # run a campaign against the scripted scheduler
        code = main(["run", str(paper), "--campaign", "scripted-1", "--budget-experiments", "4", "--data-dir", str(tmp_path / "state")])
        run_output = capsys.readouterr().out

        # replay it from the stream alone
        assert main(["replay", "scripted-1"]) == 0
        replay_output = capsys.readouterr().out

        # list its events and the campaigns
        assert main(["events", "scripted-1"]) == 0
        event_lines = capsys.readouterr().out.splitlines()
        assert main(["status"]) == 0
        status_output = capsys.readouterr().out
    finally:
        scheduler.stop()
        asyncio.run(delete_topology(nats_url, subjects))

    assert code == exit_code
    assert scheduler.requests[0]["paper_path"] == str(paper.resolve())
    assert scheduler.requests[0]["budget"]["max_experiments"] == 4
    assert scheduler.requests[0]["pool"] == "cpu"
    assert "CampaignCompleted" in run_output and "BaselineReproduced" in run_output
    assert replay_output in run_output
    assert f"Outcome       {outcome}: scripted {outcome}" in replay_output
    report = tmp_path / "state" / "reports" / "scripted-1.md"
    assert f"report: {report}" in run_output
    assert "## Audit timeline" in report.read_text()
    assert [json.loads(line)["event_type"] for line in event_lines] == ["CampaignStarted", "ObjectiveSet", "BaselineReproduced", "CampaignCompleted"]
    assert "scripted-1" in status_output and outcome in status_output


def test_replay_without_a_store_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("NATS_URL", raising=False)

    code = main(["replay", "anything", "--data-dir", str(tmp_path)])

    assert code == 1
    assert "no event store" in capsys.readouterr().err


@pytest.mark.nats
def test_stack_names_a_service_that_never_becomes_ready_with_its_log(tmp_path: Path) -> None:
    stack = Stack(tmp_path, services=("resource",), max_restarts=1, ready_timeout=60, extra_env={"AUTOSOTA_NAMESPACE": "Not-Valid"})

    started = time.monotonic()
    with pytest.raises(StackError) as raised:
        stack.start()

    assert "services not ready" in str(raised.value) and "resource" in str(raised.value)
    assert "namespace" in str(raised.value)  # the tail of the service's log says why
    assert time.monotonic() - started < 45
    assert stack.nats is None
    assert stack.restarts["resource"] == 1
