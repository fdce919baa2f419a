"""The local sandbox with real processes: time limits reach the whole process group, output is bounded."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from shared.sandbox import Limits, run, sandbox_env

BIN = str(Path(sys.executable).parent)


async def test_a_command_past_its_time_limit_is_killed_with_its_children(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    command = f"sleep 60 & echo $! > {pid_file}; wait"
    started = time.monotonic()
    outcome = await run(command, tmp_path, sandbox_env(BIN), Limits(wall_seconds=1.0))
    assert outcome.timed_out and not outcome.ok and time.monotonic() - started < 10
    assert "time limit" in outcome.output_tail
    child = int(pid_file.read_text())
    for _ in range(50):
        if not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]:
            break
        time.sleep(0.1)
    else:
        os.kill(child, 9)
        raise AssertionError("the background child outlived its sandbox")


async def test_output_beyond_the_limit_is_truncated_but_the_command_finishes(tmp_path: Path) -> None:
    lines: list[str] = []

    async def sink(line: str) -> None:
        lines.append(line)

    outcome = await run("python -c \"print('x' * 1000); print('y' * 5000); print('done')\"", tmp_path, sandbox_env(BIN), Limits(output_bytes=2000), sink)
    assert outcome.ok and outcome.output_truncated
    assert lines == ["x" * 1000]
    # The tail still shows how the output ended, each line cut short.
    assert outcome.output_tail.splitlines()[-2:] == ["done", "[output truncated after 2000 bytes (6007 in all); the last lines are kept above]"]
    assert f"{'y' * 2000} [... 3000 more bytes of this line not kept]" in outcome.output_tail


async def test_the_environment_interpreter_comes_first_and_project_settings_do_not_leak(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("AUTOSOTA_SECRET_SETTING", "x")
    outcome = await run("python -c \"import os, sys; print(sys.executable); print(os.environ.get('AUTOSOTA_SECRET_SETTING'))\"", tmp_path, sandbox_env(BIN), Limits())
    assert outcome.ok
    executable, leaked = outcome.output_tail.splitlines()
    assert Path(executable).parent == Path(BIN) and leaked == "None"
