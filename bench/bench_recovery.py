"""Benchmark of crash recovery: how long a campaign waits after an agent or a runner is SIGKILLed
mid-work, with today's leases against the long fixed leases they replaced, in the same run.

    python bench/bench_recovery.py [--rounds 2]      # NATS_URL if set, else an embedded nats-server

Each round runs one campaign on the whole stack (nine services, four runners) per lease
configuration, on a generated paper whose smoke run takes 10 s and whose training takes 40 s:

- agent kill: init is SIGKILLed 2 s into the paper's smoke run, which it runs inside its handler,
  and revived at once. Measured: from the kill until the smoke run starts again, i.e. until the
  revived init holds the redelivered message.
- runner kill: the runner holding a baseline job is SIGKILLed 2 s into the job and stays down.
  Measured: from the kill until the same job's training starts on another (idle) runner.

Jobs and smoke runs are seen in /proc: a process whose command line is the paper's and whose
working directory lies under that stack's data directory.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from shared.cli import request_start
from shared.embedded import Stack
from shared.subjects import Subjects

SMOKE_SECONDS = 10
TRAIN_SECONDS = 40
KILL_AFTER_SECONDS = 2.0
# The leases before agents and runners renewed them while working (fixed, long enough for the
# longest reaction), and the defaults now (renewed every third of the lease).
CONFIGURATIONS = {
    "before (event lease 60 s, job lease 30 s)": {"AUTOSOTA_EVENT_ACK_WAIT_SECONDS": "60", "AUTOSOTA_WORK_ACK_WAIT_SECONDS": "30"},
    "now (defaults)": {},
}

CARD = """[paper]
title = "Recovery benchmark"
text = "paper.md"
method = "Slow (ours)"

[objective]
primary_metric = "rmse"
direction = "minimize"
reported_value = 0.5
protected_paths = ["evaluate.py"]

[environment]
requirements = "requirements.txt"
smoke_command = "python train.py --smoke && python evaluate.py"

[experiment]
train_command = "python train.py"
evaluate_command = "python evaluate.py"
timeout_seconds = 300
baseline_seeds = [0, 1, 2]

[search_space.width]
type = "int"
low = 1
high = 64
baseline = 8
"""
TRAIN = f"""import os, sys, time
time.sleep({SMOKE_SECONDS} if "--smoke" in sys.argv else {TRAIN_SECONDS})
os.makedirs("outputs", exist_ok=True)
open("outputs/score.txt", "w").write("0.5")
"""
EVALUATE = """import json
print(json.dumps({"rmse": float(open("outputs/score.txt").read())}))
"""


def slow_paper(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name, text in {"autosota.toml": CARD, "paper.md": "# Slow\n\nRMSE 0.5.\n", "requirements.txt": "", "train.py": TRAIN, "evaluate.py": EVALUATE}.items():
        (folder / name).write_text(text)
    return folder


def paper_processes(data_dir: Path, smoke: bool) -> dict[int, Path]:
    """The paper's training processes under this stack, by pid, with their working directories."""
    found: dict[int, Path] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            cwd = (entry / "cwd").resolve()
        except OSError:
            continue
        if b"train.py" in argv and (b"--smoke" in argv) == smoke and cwd.is_relative_to(data_dir):
            found[int(entry.name)] = cwd
    return found


def runner_of(stack_dir: Path, workspace: Path) -> str:
    """The runner instance whose folder holds a job's workspace."""
    return next(part for part in workspace.relative_to(stack_dir).parts if part.startswith("runner-"))


def wait_until(probe: Callable[[], dict[int, Path]], timeout: float = 300.0, poll: float = 0.05) -> tuple[float, dict[int, Path]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = probe()
        if seen:
            return time.monotonic(), seen
        time.sleep(poll)
    raise TimeoutError("the awaited process never appeared")


def one_round(root: Path, nats_url: str | None, env: dict[str, str]) -> tuple[float, float]:
    data_dir = (root / uuid.uuid4().hex[:8]).resolve()
    namespace = f"bench{uuid.uuid4().hex[:6]}"
    paper = slow_paper(data_dir / "paper")
    with Stack(data_dir / "stack", namespace=namespace, runners=4, nats_url=nats_url, extra_env=env) as stack:
        stack_dir = (data_dir / "stack").resolve()
        request = {"campaign": "recovery", "paper_path": str(paper), "budget": {"max_experiments": 1, "parallelism": 2}, "pool": "cpu"}
        assert asyncio.run(request_start(stack.url, Subjects(namespace), request))["accepted"]
        # agent kill: init mid-smoke, revived at once
        _, first = wait_until(lambda: paper_processes(stack_dir, smoke=True))
        time.sleep(KILL_AFTER_SECONDS)
        killed = time.monotonic()
        stack.kill("init", revive=True)
        resumed, _ = wait_until(lambda: {p: c for p, c in paper_processes(stack_dir, smoke=True).items() if p not in first})
        agent_recovery = resumed - killed
        # runner kill: the runner of one baseline job, kept down; the three seeds leave a fourth runner idle
        _, jobs = wait_until(lambda: paper_processes(stack_dir, smoke=False))
        time.sleep(KILL_AFTER_SECONDS)
        pid, workspace = next(iter(jobs.items()))
        holder = runner_of(stack_dir, workspace)
        killed = time.monotonic()
        stack.kill(holder, revive=False)
        elsewhere = lambda: {p: c for p, c in paper_processes(stack_dir, smoke=False).items() if c.name == workspace.name and runner_of(stack_dir, c) != holder}  # noqa: E731
        resumed, _ = wait_until(elsewhere)
        runner_recovery = resumed - killed
    return agent_recovery, runner_recovery


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    nats_url = os.environ.get("NATS_URL")
    results: dict[str, tuple[list[float], list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="autosota-bench-recovery-") as root:
        for name, env in CONFIGURATIONS.items():
            agents, runners = results.setdefault(name, ([], []))
            for index in range(args.rounds):
                agent, runner = one_round(Path(root), nats_url, env)
                agents.append(agent)
                runners.append(runner)
                print(f"{name:44s} round {index + 1}: agent kill {agent:5.1f} s, runner kill {runner:5.1f} s", flush=True)
    print()
    print(f"{'configuration':44s} {'agent kill (median)':>20s} {'runner kill (median)':>21s}")
    for name, (agents, runners) in results.items():
        print(f"{name:44s} {statistics.median(agents):18.1f} s {statistics.median(runners):19.1f} s")
    (before_agents, before_runners), (now_agents, now_runners) = results.values()
    print(f"{'ratio before/now':44s} {statistics.median(before_agents) / statistics.median(now_agents):18.1f} x {statistics.median(before_runners) / statistics.median(now_runners):19.1f} x")


if __name__ == "__main__":
    main()
