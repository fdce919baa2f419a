"""Snapshots of a paper's folder (packed reproducibly, unpacked into fresh workspaces) and the
manifest that tells a runner what an environment adds to a workspace."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from shared.contracts import MAX_SNAPSHOT_FILES

SKIPPED_NAMES = {".git", "__pycache__", ".venv", "venv", "outputs", ".pytest_cache", ".mypy_cache"}
MAX_SNAPSHOT_BYTES = 64 * 1024 * 1024


class SnapshotError(ValueError):
    """The folder cannot be snapshotted (missing, too large, unreadable)."""


@dataclass(frozen=True)
class Snapshot:
    data: bytes
    files: dict[str, str]  # relative posix path -> sha256 of the file's content

    @property
    def size_bytes(self) -> int:
        return len(self.data)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def pack(folder: Path, limit: int = MAX_SNAPSHOT_BYTES) -> Snapshot:
    """A tar.gz of the folder with fixed metadata, so the same content gives the same bytes."""
    if not folder.is_dir():
        raise SnapshotError(f"{folder} is not a folder")
    files: dict[str, str] = {}
    raw = io.BytesIO()
    total = 0
    paths = sorted(_walk(folder))
    if len(paths) > MAX_SNAPSHOT_FILES:
        # the file list travels in one event; a folder this large is a dataset, not a paper's code
        raise SnapshotError(f"{folder} holds {len(paths)} files; a paper snapshot may hold at most {MAX_SNAPSHOT_FILES} (move data files out of the paper folder)")
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in paths:
            relative = path.relative_to(folder).as_posix()
            info = tarfile.TarInfo(relative)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if path.is_symlink():
                info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
                tar.addfile(info)
                files[relative] = "symlink:" + info.linkname
                continue
            content = path.read_bytes()
            total += len(content)
            if total > limit:
                raise SnapshotError(f"{folder} holds more than {limit} bytes")
            info.size, info.mode = len(content), 0o755 if os.access(path, os.X_OK) else 0o644
            tar.addfile(info, io.BytesIO(content))
            files[relative] = hashlib.sha256(content).hexdigest()
    return Snapshot(gzip.compress(raw.getvalue(), mtime=0), files)


def _walk(folder: Path) -> list[Path]:
    found: list[Path] = []
    for root, directories, names in os.walk(folder):
        linked = [d for d in directories if Path(root, d).is_symlink()]
        found.extend(Path(root, d) for d in linked)  # recorded as links, never followed
        directories[:] = sorted(d for d in directories if d not in SKIPPED_NAMES and d not in linked)
        found.extend(Path(root, name) for name in names)
    return found


def unpack(data: bytes, destination: Path) -> None:
    """Unpack a snapshot, refusing members that would land outside the destination."""
    destination.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data)), mode="r") as tar:
        tar.extractall(destination, filter="data")


def read_member(data: bytes, relative: str) -> bytes:
    name = PurePosixPath(relative).as_posix()
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data)), mode="r") as tar:
        try:
            member = tar.extractfile(name)
        except KeyError:
            raise FileNotFoundError(relative) from None
        if member is None:
            raise FileNotFoundError(relative)
        return member.read()


def read_members(data: bytes, relatives: list[str], max_bytes: int) -> dict[str, bytes]:
    """Several files of a snapshot in one pass over it; a file larger than max_bytes is left out."""
    wanted = {PurePosixPath(relative).as_posix() for relative in relatives}
    found: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data)), mode="r") as tar:
        for member in tar:
            if member.name in wanted and member.isfile() and member.size <= max_bytes:
                extracted = tar.extractfile(member)
                if extracted is not None:
                    found[member.name] = extracted.read()
    return found


def hash_paths(root: Path, protected: list[str]) -> dict[str, str | None]:
    """sha256 of every file under each protected path (None where a listed file is missing)."""
    hashes: dict[str, str | None] = {}
    for entry in protected:
        target = root / entry
        if target.is_symlink():
            hashes[entry] = "symlink:" + os.readlink(target)
        elif target.is_dir():
            for path in sorted(target.rglob("*")):
                relative = path.relative_to(root).as_posix()
                if path.is_symlink():
                    hashes[relative] = "symlink:" + os.readlink(path)
                elif path.is_file() and "__pycache__" not in path.parts:
                    hashes[relative] = sha256_file(path)
        elif target.is_file():
            hashes[entry] = sha256_file(target)
        else:
            hashes[entry] = None
    return hashes


# ---------------------------------------------------------------- environments

ENVIRONMENT_MANIFEST = "autosota-environment.json"


@dataclass(frozen=True)
class EnvironmentManifest:
    """What an environment is besides its interpreter: written by init next to the environment's bin/,
    read by runners. Repairs that change the code (a forced CPU device, a relinked data path, a
    smaller batch) travel as a patch applied to every workspace; a slow paper as a time factor.
    The rest records what the environment holds and how it was built."""

    spec_sha256: str
    requirements: tuple[str, ...] = ()
    repairs: tuple[str, ...] = ()
    source_patch: str = ""
    timeout_factor: float = 1.0
    repair_reasons: tuple[str, ...] = ()  # per repair, the failure signature it answered
    environment_sha256: str = ""  # the key of the cached environment it runs
    builder: str = ""  # "uv" or "pip"
    python: str = ""
    resolved: tuple[str, ...] = ()  # the pinned requirements installed

    _LISTS = ("requirements", "repairs", "repair_reasons", "resolved")

    def to_json(self) -> str:
        return json.dumps({**self.__dict__, **{name: list(getattr(self, name)) for name in self._LISTS}}, sort_keys=True, indent=2)

    @classmethod
    def from_json(cls, text: str) -> EnvironmentManifest:
        data = json.loads(text)
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        for name in cls._LISTS:
            known[name] = tuple(known.get(name, ()))
        return cls(**known)


def read_manifest(environment_bin: str | Path) -> EnvironmentManifest | None:
    """The manifest of the environment whose bin/ folder is given, if it has one."""
    path = Path(environment_bin).parent / ENVIRONMENT_MANIFEST
    try:
        return EnvironmentManifest.from_json(path.read_text())
    except (OSError, ValueError, TypeError):
        return None


def write_manifest(environment_root: Path, manifest: EnvironmentManifest) -> None:
    environment_root.mkdir(parents=True, exist_ok=True)
    partial = environment_root / f".{ENVIRONMENT_MANIFEST}.partial"
    partial.write_text(manifest.to_json() + "\n")
    partial.replace(environment_root / ENVIRONMENT_MANIFEST)
