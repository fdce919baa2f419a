"""Confines one command before it runs: no network, the workspace the only writable place.

Run as a script (standard library only, so it needs no installed project):

    python confine.py --workspace W [--network] [--read-only REL]... -- COMMAND...

It enters new mount, network and PID namespaces, makes the root file system read-only (and the
cgroup file systems, so that the command stays in the job's cgroup the runner put it in),
keeps the workspace writable except the listed protected paths, gives the command a private
/dev/shm and a /tmp whose writes stay private, and runs it as PID 1 of its namespace, so every process it starts dies
with it, and it dies with the runner that started it. `--probe` exits 0 when the platform
allows all of this (root, or unprivileged user namespaces), else 1 with the reason.
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import os
import signal
import socket
import struct
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MS_RELATIME = 0x200000
# A remount must repeat the flags a mount already has: in a user namespace they are locked.
MOUNT_OPTION_FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME, "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME}
PR_SET_PDEATHSIG = 1
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
EXIT_SETUP_FAILED = 125
TMP = "/tmp"
SHM = "/dev/shm"

_libc = ctypes.CDLL(None, use_errno=True)


class ConfinementError(OSError):
    pass


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise ConfinementError(errno, f"{what}: {os.strerror(errno)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    encode = lambda text: text.encode() if text is not None else None  # noqa: E731
    _check(_libc.mount(encode(source), encode(target), encode(fstype), flags, encode(data)), f"mount {target}")


def _die_with_parent() -> None:
    _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl")


def _enter_namespaces(network: bool = False) -> None:
    """New mount and PID namespaces, and a network one unless kept; through a user namespace when not root."""
    flags = CLONE_NEWNS | CLONE_NEWPID | (0 if network else CLONE_NEWNET)
    if os.geteuid() == 0:
        _check(_libc.unshare(flags), "unshare")
        return
    uid, gid = os.geteuid(), os.getegid()
    _check(_libc.unshare(flags | CLONE_NEWUSER), "unshare")
    with open("/proc/self/setgroups", "w") as handle:
        handle.write("deny")
    with open("/proc/self/uid_map", "w") as handle:
        handle.write(f"{uid} {uid} 1")
    with open("/proc/self/gid_map", "w") as handle:
        handle.write(f"{gid} {gid} 1")


def _loopback_up() -> None:
    """Local sockets keep working (some code talks to itself on 127.0.0.1); nothing else exists."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14s", b"lo", 0, b"")
        flags = struct.unpack("16sH14s", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH14s", b"lo", flags | IFF_UP, b""))


def _confine_files(workspace: str, read_only: list[str]) -> None:
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount(workspace, workspace, None, MS_BIND | MS_REC)  # its own mount, so it stays writable
    keep = os.open(workspace, os.O_PATH | os.O_DIRECTORY)
    _mount(None, "/", None, MS_BIND | MS_REMOUNT | MS_RDONLY)
    _cgroups_read_only()
    hidden = _private_scratch(workspace)
    if hidden:
        # The fresh tmpfs covers the workspace: bind it back in place from the descriptor kept open.
        os.makedirs(workspace, exist_ok=True)
        _mount(f"/proc/self/fd/{keep}", workspace, None, MS_BIND | MS_REC)
    os.close(keep)
    root = os.path.realpath(workspace)
    for relative in read_only:
        path = os.path.realpath(os.path.join(workspace, relative))
        if (path == root or path.startswith(root + os.sep)) and os.path.exists(path):
            _mount(path, path, None, MS_BIND | MS_REC)
            _mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY)
    try:
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV)
    except ConfinementError:
        pass  # the host's /proc stays; the namespace is still private


def _cgroups_read_only() -> None:
    """Remount the cgroup file systems read-only, so that the command cannot simply write itself out of its job's cgroup."""
    with open("/proc/self/mounts") as mounts:
        entries = [line.split() for line in mounts]
    for entry in entries:
        if len(entry) >= 4 and entry[2] in ("cgroup", "cgroup2"):
            kept = 0
            for option in entry[3].split(","):
                kept |= MOUNT_OPTION_FLAGS.get(option, 0)
            try:
                _mount(None, entry[1].replace("\\040", " "), None, MS_BIND | MS_REMOUNT | MS_RDONLY | kept)
            except ConfinementError:
                pass  # refused only without privileges, where a command could not write there anyway


def _private_scratch(workspace: str) -> bool:
    """A fresh /dev/shm, and /tmp as it was but with writes kept private; True if that covers the workspace."""
    _mount("tmpfs", SHM, "tmpfs", MS_NOSUID | MS_NODEV, "size=1g,mode=1777")
    upper, work = os.path.join(SHM, ".sandbox-tmp", "upper"), os.path.join(SHM, ".sandbox-tmp", "work")
    os.makedirs(upper)
    os.makedirs(work)
    try:
        # Everything under /tmp stays readable (environments, caches); what is written there is discarded.
        _mount("overlay", TMP, "overlay", MS_NOSUID | MS_NODEV, f"lowerdir={TMP},upperdir={upper},workdir={work}")
    except ConfinementError:
        os.environ["TMPDIR"] = SHM  # /tmp stays read-only; temporary files go to the private /dev/shm
        return workspace == SHM or workspace.startswith(SHM + os.sep)
    return any(workspace == scratch or workspace.startswith(scratch + os.sep) for scratch in (TMP, SHM))


def _run_as_namespace_init(args: argparse.Namespace) -> int:
    """Fork the command as PID 1 of the new PID namespace and wait for it."""
    child = os.fork()
    if child == 0:
        try:
            _die_with_parent()
            _confine_files(args.workspace, args.read_only)
            if not args.network:
                _loopback_up()
            os.chdir(args.workspace)
        except OSError as error:
            print(f"[sandbox] confinement failed: {error}", file=sys.stderr, flush=True)
            os._exit(EXIT_SETUP_FAILED)
        try:
            os.execvp(args.command[0], args.command)
        except OSError as error:
            print(f"[sandbox] cannot run {args.command[0]}: {error}", file=sys.stderr, flush=True)
            os._exit(127)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda number, frame: os.kill(child, signal.SIGKILL))
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except InterruptedError:
            continue
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def probe() -> tuple[bool, str]:
    """Whether this platform lets a command be confined, tried in a throwaway child."""
    child = os.fork()
    if child == 0:
        try:
            _enter_namespaces()
            os._exit(0)
        except OSError:
            os._exit(1)
    _, status = os.waitpid(child, 0)
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        return True, "mount, network and PID namespaces"
    return False, "namespaces are not permitted here (not root and no unprivileged user namespaces)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probe", action="store_true")
    parser.add_argument("--workspace")
    parser.add_argument("--network", action="store_true", help="keep the host's network")
    parser.add_argument("--read-only", action="append", default=[], help="a path inside the workspace to protect")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.probe:
        ok, reason = probe()
        print(reason)
        return 0 if ok else 1
    if args.command and args.command[0] == "--":
        args.command = args.command[1:]
    if not args.workspace or not args.command:
        parser.error("--workspace and a command are required")
    args.workspace = os.path.abspath(args.workspace)
    try:
        _die_with_parent()
        if os.getppid() == 1:
            return EXIT_SETUP_FAILED  # the runner is already gone
        _enter_namespaces(network=args.network)
    except OSError as error:
        print(f"[sandbox] confinement failed: {error}", file=sys.stderr, flush=True)
        return EXIT_SETUP_FAILED
    return _run_as_namespace_init(args)


if __name__ == "__main__":
    sys.exit(main())
