"""A scratch git repository with the campaign's base code, where a model's diff is checked and composed.

The base is the snapshot with the base idea's patch applied. `check` says whether a diff applies
(`git apply --check`), `compose` turns a diff against the base into one diff against the snapshot,
which is what runners apply. Everything depends only on the snapshot's bytes and the diffs, so a
replay gets the same answers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from shared.workspace import unpack

GIT_TIMEOUT = 30.0
MAX_FILE_CHARS = 24_000
MAX_TOTAL_CHARS = 60_000
TEXT_SUFFIXES = (".py", ".md", ".txt", ".toml", ".cfg", ".ini", ".yaml", ".yml", ".json", ".sh")
SKIPPED_PREFIXES = ("outputs/", ".git/")


class BenchError(RuntimeError):
    """The base itself cannot be built (its patch does not apply to the snapshot)."""


def _git_env(home: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}
    env.update({"HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "LC_ALL": "C"})
    return env


class Workbench:
    def __init__(self, snapshot: bytes, base_patch: str | None = None) -> None:
        self._scratch = Path(tempfile.mkdtemp(prefix="autosota-ideator-"))
        self.root = self._scratch / "paper"
        self._env = _git_env(self._scratch)
        unpack(snapshot, self.root)
        self._git("init", "-q")
        self._commit("snapshot")
        self.snapshot_commit = self._git("rev-parse", "HEAD").stdout.strip()
        if base_patch:
            error = self._apply(base_patch, check=False)
            if error:
                self.close()
                raise BenchError(f"the base patch does not apply to the snapshot: {error}")
            self._commit("base")

    def close(self) -> None:
        shutil.rmtree(self._scratch, ignore_errors=True)

    def __enter__(self) -> Workbench:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ what the model sees

    def files(self, protected: list[str]) -> tuple[dict[str, str], dict[str, str]]:
        """(editable, read-only) text files of the base code, within size limits, in path order."""
        editable: dict[str, str] = {}
        read_only: dict[str, str] = {}
        total = 0
        for path in sorted(self._tracked()):
            if not path.endswith(TEXT_SUFFIXES) or path.startswith(SKIPPED_PREFIXES):
                continue
            try:
                text = (self.root / path).read_text()
            except (OSError, UnicodeDecodeError):
                continue
            if len(text) > MAX_FILE_CHARS or total + len(text) > MAX_TOTAL_CHARS:
                continue
            is_protected = any(path == entry.rstrip("/") or path.startswith(entry.rstrip("/") + "/") for entry in protected)
            if is_protected and not path.endswith(".py"):
                continue  # protected data and notes: the model need not read them
            (read_only if is_protected else editable)[path] = text
            total += len(text)
        return editable, read_only

    # ------------------------------------------------------------ diffs

    def check(self, diff: str) -> str | None:
        """None when the diff applies to the base, else git's explanation."""
        try:
            return self._apply(diff, check=True)
        except BenchError as error:
            return str(error)

    def compose(self, diff: str) -> str:
        """The diff that takes the snapshot to the base with this diff applied."""
        error = self._apply(diff, check=False)
        if error:
            raise BenchError(error)
        try:
            self._git("add", "-A")
            return self._git("diff", "--cached", "--no-color", "--no-ext-diff", "--no-renames", self.snapshot_commit).stdout
        finally:
            self._git("reset", "-q", "--hard", "HEAD")
            self._git("clean", "-q", "-fd")

    def _apply(self, diff: str, check: bool) -> str | None:
        text = diff if diff.endswith("\n") else diff + "\n"
        strip = "-p1" if _prefixed(text) else "-p0"
        error = self._git_apply(text, strip, check)
        if error is None:
            return None
        # Models often get hunk line numbers wrong: place each hunk where its old lines are.
        relocated = relocate_hunks(text, strip == "-p1", self._read)
        if relocated != text and self._git_apply(relocated, strip, check) is None:
            return None
        return error

    def _git_apply(self, text: str, strip: str, check: bool) -> str | None:
        args = ["apply", strip, "--recount", "--whitespace=nowarn", *(["--check"] if check else []), "-"]
        result = self._git(*args, stdin=text, check=False)
        if result.returncode == 0:
            return None
        return (result.stderr or result.stdout).strip() or f"git apply exited with {result.returncode}"

    def _read(self, path: str) -> list[str] | None:
        target = (self.root / path).resolve()
        if not target.is_relative_to(self.root.resolve()) or not target.is_file():
            return None
        try:
            return target.read_text().splitlines()
        except (OSError, UnicodeDecodeError):
            return None

    # ------------------------------------------------------------ git

    def _tracked(self) -> list[str]:
        return [line for line in self._git("ls-files", "-z").stdout.split("\0") if line]

    def _commit(self, message: str) -> None:
        self._git("add", "-A")
        self._git("-c", "user.name=autosota", "-c", "user.email=autosota@localhost", "-c", "commit.gpgsign=false", "commit", "-q", "--allow-empty", "-m", message)

    def _git(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        try:
            result = subprocess.run(
                ["git", "-c", "core.autocrlf=false", "-c", "core.quotepath=false", *args],
                cwd=self.root, env=self._env, input=stdin, capture_output=True, text=True, timeout=GIT_TIMEOUT,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise BenchError(f"git {args[0]} could not run: {error}") from None
        if check and result.returncode != 0:
            raise BenchError(f"git {args[0]} failed: {(result.stderr or result.stdout).strip()}")
        return result


def _prefixed(diff: str) -> bool:
    """True when the diff's file headers carry git's a/ and b/ prefixes."""
    headers = [line[4:].split("\t", 1)[0].strip() for line in diff.splitlines() if line.startswith(("--- ", "+++ "))]
    paths = [h for h in headers if h != "/dev/null"]
    return bool(paths) and all(p.startswith(("a/", "b/")) for p in paths)


def relocate_hunks(diff: str, prefixed: bool, read: object) -> str:
    """The diff with each hunk's header pointing at where its old lines actually are in the file."""
    out: list[str] = []
    lines = diff.splitlines()
    current: list[str] | None = None
    shift = 0
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("--- "):
            path = line[4:].split("\t", 1)[0].strip()
            if prefixed and path.startswith(("a/", "b/")):
                path = path[2:]
            current = read(path) if path != "/dev/null" else None  # type: ignore[operator]
            shift = 0
            out.append(line)
            index += 1
            continue
        if line.startswith("@@") and current is not None:
            body: list[str] = []
            index += 1
            while index < len(lines) and not lines[index].startswith(("@@", "--- ", "diff ")):
                body.append(lines[index])
                index += 1
            old = [b[1:] for b in body if b[:1] in (" ", "-") or b == ""]
            new_count = sum(1 for b in body if b[:1] in (" ", "+") or b == "")
            start = _find(current, old)
            if start is None:
                out.append(line)
            else:
                out.append(f"@@ -{start + 1},{len(old)} +{start + 1 + shift},{new_count} @@")
                shift += new_count - len(old)
            out.extend(body)
            continue
        out.append(line)
        index += 1
    return "\n".join(out) + "\n"


def _find(lines: list[str], block: list[str]) -> int | None:
    if not block:
        return None
    width = len(block)
    for start in range(0, len(lines) - width + 1):
        if lines[start : start + width] == block:
            return start
    return None
