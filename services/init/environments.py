"""Isolated environments: resolved and built with uv (python -m venv and pip where uv is missing or
fails), kept in a machine-wide cache by the hash of what they hold, and shown to a specification
through a view that carries its manifest.

Every paper gets a virtual environment of its own, on the Python of this interpreter but without
its packages (no system site-packages, no overlay), holding exactly its resolved requirements.
Providing one: the requirements are resolved to a pinned list (`uv pip compile`), the pinned list,
the Python version and the pool's variant are hashed into a key (`resolution.cache_key`), and the
environment under `<cache>/<key>` is found ready or built. The cache folder:

    <cache>/<key>/                    a ready environment: bin/, lib/, pyvenv.cfg, its build record
                                      (autosota-build.json: builder, Python, pins) and ready mark
    <cache>/<key>.lock                flock'ed by the one builder of that key; the others wait
    <cache>/.building-<key>-<pid>-<r> an environment being built, renamed into place when complete

so nobody ever runs a half-built environment. uv's environments are relocatable; pip's have the
headers of their scripts rewritten before the rename. Without uv (or when uv fails for a reason
other than the requirements themselves) the requirements go unresolved to pip, and the key hashes
them as written. A view (`expose`) is a specification's own folder: its manifest, and links to
the cached environment's bin/, lib/ and pyvenv.cfg, so the view's bin/ runs that environment.
"""

from __future__ import annotations

import asyncio
import configparser
import contextlib
import fcntl
import json
import os
import platform
import secrets
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import unquote, urlparse

from packaging.tags import sys_tags

from services.init.resolution import CPU_VARIANT, cache_key, is_package_failure, pinned_lines, preferred_cpu_builds, summary
from shared.sandbox import Limits, Outcome, run, sandbox_env
from shared.settings import Settings
from shared.workspace import EnvironmentManifest, write_manifest

BUILD_LIMITS = Limits(wall_seconds=900, memory_bytes=None)
READY_MARK = ".autosota-ready"
BUILD_RECORD = "autosota-build.json"
KEY_CHARS = 24
VIEW_LINKS = ("bin", "lib", "lib64", "pyvenv.cfg")
LOCK_POLL_SECONDS = 0.2
ERROR_LINES_KEPT = 40
UV_ENV = {"UV_PYTHON_DOWNLOADS": "never", "UV_NO_PROGRESS": "1"}


@dataclass(frozen=True)
class Toolchain:
    """What builds environments on this machine, and for which pool."""

    python: str
    python_version: str
    cache_dir: Path
    uv: str | None
    wheel_dirs: tuple[str, ...] = ()
    no_index: bool = False  # only the wheel folders, never an index (tests, air-gapped machines)
    variant: str = CPU_VARIANT
    limits: Limits = BUILD_LIMITS

    @classmethod
    def here(cls, settings: Settings, variant: str) -> Toolchain:
        uv = find_uv() if settings.env_builder == "uv" else None
        return cls(sys.executable, platform.python_version(), settings.env_cache_dir.expanduser().resolve(), uv, wheel_dirs(settings.wheel_dirs), variant=variant)

    def source_flags(self) -> str:
        flags = ["--no-index"] if self.no_index else []
        for folder in self.wheel_dirs:
            flags += ["--find-links", folder]
        return " ".join(shlex.quote(flag) for flag in flags)


@dataclass(frozen=True)
class Provided:
    """An environment ready in the cache (or why there is none), and how it came to be."""

    outcome: Outcome
    key: str = ""
    root: Path | None = None
    builder: str = ""  # "uv" or "pip"
    reused: bool = False
    pinned: tuple[str, ...] | None = None  # None: not resolved, pip takes the requirements as written
    notes: tuple[str, ...] = ()


def find_uv() -> str | None:
    """The uv binary of the uv package, else one on PATH, else None."""
    try:
        from uv import find_uv_bin

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        return shutil.which("uv")


def wheel_dirs(setting: str | None) -> tuple[str, ...]:
    """The local wheel folders to install from: the setting's, or those pip's configuration names as find-links."""
    if setting is not None:
        return tuple(folder for folder in setting.split(os.pathsep) if folder)
    return pip_find_links()


def pip_find_links() -> tuple[str, ...]:
    """The local folders named by find-links in pip's configuration files and $PIP_FIND_LINKS, in pip's order."""
    xdg = os.environ.get("XDG_CONFIG_DIRS", "/etc/xdg").split(os.pathsep)
    files = [Path(d) / "pip" / "pip.conf" for d in xdg if d] + [Path("/etc/pip.conf"), Path.home() / ".pip" / "pip.conf", Path.home() / ".config" / "pip" / "pip.conf", Path(sys.prefix) / "pip.conf"]
    if os.environ.get("PIP_CONFIG_FILE"):
        files.append(Path(os.environ["PIP_CONFIG_FILE"]))
    entries: list[str] = []
    for path in files:
        parser = configparser.ConfigParser(interpolation=None)
        with contextlib.suppress(OSError, configparser.Error):
            parser.read(path)
        for section in ("global", "install"):
            entries += parser.get(section, "find-links", fallback="").split()
    entries += os.environ.get("PIP_FIND_LINKS", "").split()
    folders = [unquote(urlparse(entry).path) if entry.startswith("file:") else entry for entry in entries]
    return tuple(dict.fromkeys(folder for folder in folders if Path(folder).is_dir()))


async def provide(requirements: list[str], tools: Toolchain) -> Provided:
    """The environment holding exactly these requirements, resolved: from the cache, else built into it."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="autosota-env-") as scratch:
        folder = Path(scratch)
        resolved = await resolve(requirements, tools, folder)
        if not resolved.outcome.ok:
            return resolved
        key = resolved.key
        final = tools.cache_dir / key[:KEY_CHARS]
        if not _ready(final):
            try:
                async with _locked(tools.cache_dir / f"{final.name}.lock", tools.limits.wall_seconds):
                    if not _ready(final):
                        return await _build(requirements, resolved, final, tools, folder, started)
            except TimeoutError as error:
                return replace(resolved, outcome=_failed(str(error), time.monotonic() - started))
    builder = _record(final).get("builder", "")
    took = time.monotonic() - started
    return replace(resolved, root=final, builder=builder, reused=True, outcome=Outcome(0, False, f"reused environment {final.name} (built with {builder}); resolved in {took:.1f} s", False, took))


def expose(environment: Path, view: Path, manifest: EnvironmentManifest) -> Path:
    """The specification's view of a cached environment: a folder of its own with the manifest, the rest linked."""
    if (view / READY_MARK).is_file() and (view / "bin").resolve() == (environment / "bin").resolve():
        return view
    view.parent.mkdir(parents=True, exist_ok=True)
    partial = view.with_name(f".{view.name}.{os.getpid()}-{secrets.token_hex(3)}.partial")
    partial.mkdir()
    for entry in VIEW_LINKS:
        if (environment / entry).exists():
            (partial / entry).symlink_to(environment / entry)
    write_manifest(partial, manifest)
    (partial / READY_MARK).write_text("ok\n")
    shutil.rmtree(view, ignore_errors=True)  # an unfinished view, or one of an older layout
    try:
        partial.rename(view)
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)  # another campaign made the same view meanwhile
        if not (view / READY_MARK).is_file():
            raise
    return view


# ---------------------------------------------------------------- resolving


async def resolve(requirements: list[str], tools: Toolchain, scratch: Path) -> Provided:
    """The pinned list and the key; a failure when the requirements themselves cannot be resolved."""
    (scratch / "requirements.in").write_text("".join(line + "\n" for line in requirements))
    if tools.uv is None:
        return Provided(_ok("unresolved: uv is not in use"), cache_key(requirements, tools.python_version, tools.variant, resolved=False), notes=("uv is not in use; pip installs the requirements as written",))
    notes: list[str] = []
    preferred = preferred_cpu_builds(requirements, _wheel_files(tools.wheel_dirs), sys_tags()) if tools.variant == CPU_VARIANT else []
    compiled, output = await _compile(tools, scratch, preferred)
    if not compiled.ok and preferred and is_package_failure(output):
        notes.append(f"the local CPU builds {', '.join(preferred)} do not fit these requirements; the index's builds are used")
        compiled, output = await _compile(tools, scratch, [])
    elif preferred:
        notes.append(f"preferred the local CPU builds {', '.join(preferred)}")
    if not compiled.ok:
        if compiled.killed_for is not None:
            return Provided(compiled)
        if is_package_failure(output):
            return Provided(_failed(_failure_tail(output), compiled.duration_seconds, compiled))
        notes.append(f"uv could not resolve ({_last_line(output)}); pip installs the requirements as written")
        return Provided(_ok("unresolved"), cache_key(requirements, tools.python_version, tools.variant, resolved=False), notes=tuple(notes))
    pinned = pinned_lines((scratch / "pinned.txt").read_text())
    return Provided(_ok("resolved", compiled.duration_seconds), cache_key(pinned, tools.python_version, tools.variant), pinned=tuple(pinned), notes=tuple(notes))


async def _compile(tools: Toolchain, scratch: Path, constraints: list[str]) -> tuple[Outcome, str]:
    command = f"{_q(tools.uv)} pip compile requirements.in -o pinned.txt --python {_q(tools.python)} --no-header --no-annotate --emit-index-url --emit-find-links --quiet {tools.source_flags()}"
    if constraints:
        (scratch / "preferred.txt").write_text("".join(line + "\n" for line in constraints))
        command += " --constraints preferred.txt"
    return await _logged(command, scratch, tools, "compile.log")


# ---------------------------------------------------------------- building


async def _build(requirements: list[str], resolved: Provided, final: Path, tools: Toolchain, scratch: Path, started: float) -> Provided:
    """Build the key's environment aside, then rename it into place; the caller holds the key's lock."""
    await asyncio.to_thread(_clear_leftovers, final)
    building = final.with_name(f".building-{final.name}-{os.getpid()}-{secrets.token_hex(3)}")
    notes = list(resolved.notes)
    try:
        outcome, builder = _failed("uv is not in use", 0.0), "pip"
        if tools.uv is not None and resolved.pinned is not None:
            outcome, output = await _build_with_uv(tools, building, scratch, bool(resolved.pinned))
            builder = "uv"
            if not outcome.ok and outcome.killed_for is not None:
                return replace(resolved, outcome=outcome)  # pip would be stopped by the same limit
            if not outcome.ok and is_package_failure(output):
                return replace(resolved, outcome=_failed(_failure_tail(output), time.monotonic() - started, outcome))
            if not outcome.ok:
                notes.append(f"uv failed ({_last_line(output)}); built with python -m venv and pip instead")
        if not outcome.ok:
            await asyncio.to_thread(shutil.rmtree, building, True)
            builder = "pip"
            outcome = await _build_with_pip(requirements, resolved.pinned, tools, building, final, scratch)
            if not outcome.ok:
                return replace(resolved, outcome=outcome, notes=tuple(notes))
        took = time.monotonic() - started
        record = {"key": resolved.key, "builder": builder, "python": tools.python_version, "variant": tools.variant, "pinned": resolved.pinned, "requirements": list(requirements), "seconds": round(took, 3), "notes": notes}
        (building / BUILD_RECORD).write_text(json.dumps(record, indent=2) + "\n")
        (building / READY_MARK).write_text("ok\n")
        building.rename(final)
    finally:
        await asyncio.to_thread(shutil.rmtree, building, True)
    text = f"built environment {final.name} with {builder} in {took:.1f} s" + "".join(f"; {note}" for note in notes)
    return replace(resolved, root=final, builder=builder, notes=tuple(notes), outcome=Outcome(0, False, text, False, took))


async def _build_with_uv(tools: Toolchain, building: Path, scratch: Path, anything: bool) -> tuple[Outcome, str]:
    assert tools.uv is not None
    created, output = await _logged(f"{_q(tools.uv)} venv --relocatable --quiet --python {_q(tools.python)} {_q(str(building))}", scratch, tools, "venv.log")
    if not created.ok or not anything:
        return created, output
    return await _logged(f"{_q(tools.uv)} pip sync --python {_q(str(building / 'bin' / 'python'))} --compile-bytecode --quiet {tools.source_flags()} pinned.txt", scratch, tools, "install.log")


async def _build_with_pip(requirements: list[str], pinned: tuple[str, ...] | None, tools: Toolchain, building: Path, final: Path, scratch: Path) -> Outcome:
    created = await run(f"{_q(tools.python)} -m venv {_q(str(building))}", scratch, sandbox_env(str(Path(tools.python).parent)), tools.limits)
    if not created.ok:
        return created
    wanted = "--no-deps -r pinned.txt" if pinned is not None else " ".join(_q(line) for line in requirements)
    installed = _ok("nothing to install")
    if pinned or (pinned is None and requirements):
        installed = await run(f"python -m pip install --disable-pip-version-check -q {tools.source_flags()} {wanted}", scratch, sandbox_env(str(building / "bin")), tools.limits)
    if installed.ok:
        await asyncio.to_thread(_retarget_scripts, building, final)
    return installed


def _retarget_scripts(building: Path, final: Path) -> None:
    """pip writes the environment's own path into its scripts: make them name where it will be."""
    old, new = str(building).encode(), str(final).encode()
    for script in (building / "bin").iterdir():
        if script.is_symlink() or not script.is_file():
            continue
        content = script.read_bytes()
        if old in content:
            script.write_bytes(content.replace(old, new))


def _clear_leftovers(final: Path) -> None:
    """Under the key's lock: what an interrupted builder of this key left (half-built folders, an unmarked environment)."""
    for leftover in final.parent.glob(f".building-{final.name}-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    if final.exists() and not _ready(final):
        shutil.rmtree(final, ignore_errors=True)


def _ready(root: Path) -> bool:
    return (root / READY_MARK).is_file() and (root / "bin" / "python").exists()


def _record(root: Path) -> dict[str, object]:
    try:
        data = json.loads((root / BUILD_RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@contextlib.asynccontextmanager
async def _locked(path: Path, seconds: float) -> AsyncIterator[None]:
    """Hold the lock file (flock, so a dead holder releases it); waits for another holder at most this long."""
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + seconds
    with path.open("a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"another builder held {path.name} for more than {seconds:g} s") from None
                await asyncio.sleep(LOCK_POLL_SECONDS)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---------------------------------------------------------------- commands and their output


async def _logged(command: str, scratch: Path, tools: Toolchain, log: str) -> tuple[Outcome, str]:
    """Run a uv command with its whole output in a log file (its first error line may come before thousands of build lines)."""
    outcome = await run(f"{command} > {log} 2>&1", scratch, sandbox_env(str(Path(tools.python).parent), UV_ENV), tools.limits)
    try:
        output = (scratch / log).read_text(errors="replace")
    except OSError:
        output = ""
    if not outcome.ok:
        outcome = replace(outcome, output_tail="\n".join(line for line in (output.rstrip()[-20000:], outcome.output_tail) if line))
    return outcome, output


def _failure_tail(output: str) -> str:
    """uv's error lines, then one line in pip's words that names the requirement at fault (the failure's signature)."""
    lines = output.splitlines()
    errors = [line for line in lines if line.lstrip().startswith(("error:", "cause:", "hint:", "Because", "And because", "×", "╰─▶"))]
    kept = (errors or lines)[-ERROR_LINES_KEPT:]
    said = summary(output)
    return "\n".join([*kept, f"ResolutionError: {said}" if said else "ResolutionError: uv could not install the requirements"])


def _last_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def _wheel_files(folders: Iterable[str]) -> list[str]:
    names: list[str] = []
    for folder in folders:
        with contextlib.suppress(OSError):
            names += [entry.name for entry in os.scandir(folder) if entry.name.endswith(".whl")]
    return names


def _ok(text: str, seconds: float = 0.0) -> Outcome:
    return Outcome(0, False, text, False, seconds)


def _failed(text: str, seconds: float, outcome: Outcome | None = None) -> Outcome:
    killed_for = outcome.killed_for if outcome is not None else None
    exit_code = outcome.exit_code if outcome is not None and outcome.exit_code else 1
    return Outcome(exit_code, killed_for == "time", text, False, seconds, limits_applied=outcome.limits_applied if outcome else "none", killed_for=killed_for)


def _q(text: str | None) -> str:
    return shlex.quote(text or "")
