"""The local sandbox confines what a runner runs: no network, the workspace the only writable place.

Confinement needs namespaces (root, or unprivileged user namespaces); where the platform has
none, the tests say so and skip, because the sandbox then runs commands unconfined by design.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

from shared.sandbox import Isolation, Limits, LocalSandbox, confinement_available, run, sandbox_env

BIN = str(Path(sys.executable).parent)
PROBE = """import json, os, socket, sys
host, port = sys.argv[1], int(sys.argv[2])
report = {}
for name, address in {"nats": (host, port), "internet": ("1.1.1.1", 53)}.items():
    sock = socket.socket()
    sock.settimeout(3)
    try:
        sock.connect(address)
        report[name] = "connected"
    except OSError as error:
        report[name] = "blocked: " + str(error.strerror)
for path in sys.argv[3:]:
    try:
        with open(path, "a") as handle:
            handle.write("tampered\\n")
        report[path] = "written"
    except OSError as error:
        report[path] = "denied: " + str(error.strerror)
print("PROBE " + json.dumps(report))
"""

needs_confinement = pytest.mark.skipif(not confinement_available()[0], reason=f"no confinement here: {confinement_available()[1]}")


def probe_report(output: str) -> dict[str, str]:
    line = next(line for line in output.splitlines() if line.startswith("PROBE "))
    return json.loads(line.removeprefix("PROBE "))


def nats_address(url: str) -> tuple[str, int]:
    parsed = urlparse(url.split(",")[0])
    return parsed.hostname or "127.0.0.1", parsed.port or 4222


@needs_confinement
async def test_a_confined_command_reaches_no_network_and_writes_only_its_workspace(tmp_path: Path, nats_url: str) -> None:
    workspace = tmp_path / "workspace"
    (workspace / "data").mkdir(parents=True)
    (workspace / "probe.py").write_text(PROBE)
    (workspace / "evaluate.py").write_text("print('protected')\n")
    (workspace / "data" / "test.csv").write_text("y\n1\n")
    outside = tmp_path / "outside.txt"
    outside.write_text("")
    host, port = nats_address(nats_url)
    targets = f"evaluate.py data/test.csv notes.txt {outside} /etc/autosota-probe"
    # Step 1: the same probe outside the sandbox reaches the NATS server (the probe can tell).
    with socket.create_connection((host, port), timeout=3):
        pass
    # Step 2: inside, with evaluate.py and data/ protected.
    outcome = await LocalSandbox().run(f"python probe.py {host} {port} {targets}", workspace, BIN, {}, Limits(wall_seconds=30), Isolation(read_only=("evaluate.py", "data/")))
    report = probe_report(outcome.output_tail)
    assert outcome.ok and outcome.confinement.startswith("namespaces: no network")
    assert report["nats"].startswith("blocked") and report["internet"].startswith("blocked")
    assert report["evaluate.py"] == report["data/test.csv"] == "denied: Read-only file system"
    assert report["/etc/autosota-probe"] == "denied: Read-only file system" and not Path("/etc/autosota-probe").exists()
    assert report["notes.txt"] == "written"
    # A file beside the workspace is either read-only or, under /tmp, in a private scratch copy: never touched.
    assert (workspace / "evaluate.py").read_text() == "print('protected')\n" and outside.read_text() == ""
    assert (workspace / "notes.txt").read_text() == "tampered\n"


@needs_confinement
async def test_a_confined_command_past_its_limit_takes_its_background_children_with_it(tmp_path: Path) -> None:
    started = time.monotonic()
    # Step 1: a command that leaves a daemonised child behind and then hangs.
    outcome = await run("setsid sleep 61.7 & sleep 61.7", tmp_path, sandbox_env(BIN), Limits(wall_seconds=1.0), isolation=Isolation())
    assert outcome.timed_out and time.monotonic() - started < 10
    # Step 2: nothing of it survives on the machine (its PID namespace is gone).
    time.sleep(0.5)
    survivors = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _cmdline(p) == "sleep\x0061.7\x00"]
    assert survivors == []


def _cmdline(process: Path) -> str:
    try:
        return (process / "cmdline").read_text()
    except OSError:
        return ""


async def test_without_isolation_the_command_runs_as_before(tmp_path: Path) -> None:
    outcome = await run("echo plain > out.txt && cat out.txt", tmp_path, sandbox_env(BIN), Limits())
    assert outcome.ok and outcome.output_tail == "plain" and outcome.confinement == "process group"
