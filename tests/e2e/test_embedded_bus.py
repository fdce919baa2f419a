"""`autosota run` on the embedded stack while its own nats-server is killed with SIGKILL.

The stack restarts the server on the same store and port, every client reconnects, and the
campaign ends as it would have without the crash: no re-run, no event twice. A server that
cannot be brought back ends the run with a message naming the command that resumes it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from shared.contracts import Event, parse_event
from tests.e2e.test_campaigns import assert_exactly_once

pytestmark = [pytest.mark.e2e, pytest.mark.nats]
ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT / "examples" / "tiny-forecaster"
CAMPAIGN_TIMEOUT = 420.0  # two cores run nine services, two runners and their sandboxes


def embedded_environment(data_dir: Path) -> dict[str, str]:
    """The user's environment without NATS_URL, so that `run` starts the embedded stack."""
    env = {key: value for key, value in os.environ.items() if key != "NATS_URL" and not key.startswith("AUTOSOTA_NATS_")}
    env.update({"AUTOSOTA_DATA_DIR": str(data_dir), "AUTOSOTA_NAMESPACE": ""})
    return env


class CliRun:
    """An `autosota` command in a child process, its output collected line by line as it comes."""

    def __init__(self, args: list[str], data_dir: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "shared.cli", *args],
            cwd=ROOT, env=embedded_environment(data_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.lines: list[str] = []
        self.errors: list[str] = []
        self._changed = threading.Condition()
        self._readers = [threading.Thread(target=self._collect, args=(stream, into), daemon=True) for stream, into in ((self.process.stdout, self.lines), (self.process.stderr, self.errors))]
        for reader in self._readers:
            reader.start()

    def _collect(self, stream, into: list[str]) -> None:  # type: ignore[no-untyped-def]
        for line in stream:
            with self._changed:
                into.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def output(self) -> str:
        return "".join(self.lines) + "".join(self.errors)

    def wait_for_line(self, pattern: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = next((line for line in self.lines if re.search(pattern, line)), None)
                if found is not None:
                    return found
                if self.process.poll() is not None and not any(reader.is_alive() for reader in self._readers):
                    raise AssertionError(f"exited with {self.process.returncode} before printing {pattern!r}:\n{self.output}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"no line matching {pattern!r} within {timeout:.0f} s:\n{self.output}")
                self._changed.wait(1.0)

    def wait(self, timeout: float) -> int:
        code = self.process.wait(timeout)
        for reader in self._readers:
            reader.join(10)
        return code

    def interrupt(self) -> None:
        """Ctrl-C, so that the command stops the stack it started."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def nats_server_of(pid: int) -> int | None:
    """The nats-server the process started, if one runs."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            name = (entry / "comm").read_text().strip()
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if parent == pid and name == "nats-server":
            return int(entry.name)
    return None


def recorded_events(campaign: str, data_dir: Path) -> list[Event]:
    """The campaign's events, read through `autosota events` on a server of its own."""
    listing = subprocess.run(
        [sys.executable, "-m", "shared.cli", "events", campaign], cwd=ROOT, env=embedded_environment(data_dir), capture_output=True, text=True, timeout=120,
    )
    assert listing.returncode == 0, listing.stdout + listing.stderr
    return [parse_event(json.loads(line)) for line in listing.stdout.splitlines()]


def assert_certified_once(events: list[Event]) -> None:
    completed = [e for e in events if e.event_type == "CampaignCompleted"]
    assert [e.outcome for e in completed] == ["certified"], [e.event_type for e in events][-15:]
    assert [e.event_type for e in events].count("BaselineReproduced") == 1
    assert_exactly_once(events)


def test_a_campaign_carries_on_when_the_embedded_nats_server_is_killed(tmp_path: Path) -> None:
    data_dir = tmp_path / "state"
    campaign = f"bus-kill-{uuid.uuid4().hex[:6]}"
    run = CliRun(["run", str(PAPER), "--campaign", campaign, "--budget-experiments", "8"], data_dir)
    try:
        # Step 1: once the baseline is reproduced, the stack's nats-server crashes.
        started = time.monotonic()
        run.wait_for_line(r"BaselineReproduced", CAMPAIGN_TIMEOUT)
        killed = nats_server_of(run.process.pid)
        assert killed is not None, "no nats-server under the run"
        os.kill(killed, signal.SIGKILL)
        # Step 2: the stack starts a new one in its place.
        deadline = time.monotonic() + 60
        while nats_server_of(run.process.pid) in (None, killed) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert nats_server_of(run.process.pid) not in (None, killed), "the nats-server was not restarted"
        # Step 3: the run ends by itself, with the outcome of an undisturbed campaign.
        code = run.wait(CAMPAIGN_TIMEOUT)
        took = time.monotonic() - started
    finally:
        run.interrupt()
    assert code == 0, run.output
    assert "already exists" not in run.output
    assert re.search(r"Outcome\s+certified", run.output), run.output
    assert "nats-server exited with -9; restart 1/5" in (data_dir / "nats-server.log").read_text()
    # Step 4: the recorded events hold each event once, read back after the stack is gone.
    assert_certified_once(recorded_events(campaign, data_dir))
    print(f"\ncampaign with a nats-server kill: {took:.0f} s")


def test_a_nats_server_that_cannot_come_back_ends_the_run_with_the_command_that_resumes_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "state"
    store = data_dir / "nats"
    moved = data_dir / "nats-moved"
    campaign = f"bus-dead-{uuid.uuid4().hex[:6]}"
    run = CliRun(["run", str(PAPER), "--campaign", campaign, "--budget-experiments", "8"], data_dir)
    try:
        # Step 1: after the baseline, the store is taken away and the server crashes: no restart can serve it.
        run.wait_for_line(r"BaselineReproduced", CAMPAIGN_TIMEOUT)
        killed = nats_server_of(run.process.pid)
        assert killed is not None, "no nats-server under the run"
        store.rename(moved)
        store.write_text("not a store")
        os.kill(killed, signal.SIGKILL)
        # Step 2: once the restarts are spent, the run says so and how to resume.
        code = run.wait(120)
    finally:
        run.interrupt()
    assert code == 1, run.output
    assert "the bus died" in run.output, run.output
    resume = next(line.strip() for line in run.errors if line.strip().startswith("autosota run "))
    assert f"--campaign {campaign}" in resume
    # Step 3: with the store back in place, that command finishes the campaign.
    store.unlink()
    moved.rename(store)
    resumed = CliRun(shlex.split(resume)[1:], data_dir)
    try:
        code = resumed.wait(CAMPAIGN_TIMEOUT)
    finally:
        resumed.interrupt()
    assert code == 0, resumed.output
    assert "already exists" in resumed.output
    assert re.search(r"Outcome\s+certified", resumed.output), resumed.output
    assert_certified_once(recorded_events(campaign, data_dir))
