"""The embedded stack: a private nats-server and every service as its own supervised OS process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import nats

from shared.bus import TOKEN_VARIABLE, EmbeddedNats, new_token
from shared.settings import server_urls
from shared.subjects import SERVICES, Subjects, service_of

REPO_ROOT = Path(__file__).resolve().parent.parent
LOG_TAIL_LINES = 20
SUPERVISE_INTERVAL = 0.2
BUS_READY_TIMEOUT = 20.0
# Variables that would make a service present another credential than the embedded server's token.
FOREIGN_CREDENTIALS = ("AUTOSOTA_NATS_USER", "AUTOSOTA_NATS_PASSWORD", "AUTOSOTA_NATS_CREDS", "AUTOSOTA_NATS_NKEY_SEED")
T = TypeVar("T")


class StackError(RuntimeError):
    """The stack could not be brought up."""


@dataclass
class ServiceProcess:
    instance: str
    service: str
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None
    restarts: int = 0
    held_down: bool = False
    given_up: bool = False
    exit_codes: list[int] = field(default_factory=list)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


def instance_names(services: Iterable[str], runners: int) -> list[str]:
    """Instance names: one per agent service, runner-1..runner-N for the runner service."""
    names: list[str] = []
    for service in services:
        if service == "runner":
            names += [f"runner-{i}" for i in range(1, runners + 1)]
        else:
            names.append(service)
    return names


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def off_loop(function: Callable[[], T]) -> T:
    """Call blocking code that runs its own event loop, also from inside a running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return function()
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = function()
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread
            outcome["error"] = error

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]


async def ready_instances(url: str, subjects: Subjects, instances: Iterable[str], timeout: float = 0.5, auth: dict[str, Any] | None = None) -> set[str]:
    """The instances that answer their health request with ready=true."""
    import json

    try:
        # nats-py retries a refused first connection without end (even with reconnects off): bound it
        client = await asyncio.wait_for(
            nats.connect(server_urls(url), connect_timeout=2, max_reconnect_attempts=1, allow_reconnect=False, error_cb=_quietly, **(auth or {})), 5.0
        )
    except Exception:  # noqa: BLE001 - an unreachable server: nobody is ready
        return set()
    ready: set[str] = set()
    try:
        for instance in instances:
            try:
                reply = await client.request(subjects.health(instance), b"", timeout=timeout)
                if json.loads(reply.data).get("ready") is True:
                    ready.add(instance)
            except Exception:  # noqa: BLE001, S112 - no responder or timeout: not ready yet
                continue
    finally:
        await client.close()
    return ready


@contextlib.contextmanager
def quiet_nats_client() -> Iterator[None]:
    """Silence the client's log of refused connections while a fresh server is still starting."""
    logger = logging.getLogger("nats.aio.client")
    previous = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = previous


async def _quietly(error: Exception) -> None:
    """Connection errors reach the caller as exceptions; the client need not print them too."""


class Stack:
    """Runs the whole system on one machine; a context manager, usable from sync code."""

    def __init__(
        self,
        data_dir: Path | str,
        namespace: str = "",
        runners: int = 2,
        nats_url: str | None = None,
        services: Iterable[str] = SERVICES,
        ready_timeout: float = 90.0,
        max_restarts: int = 5,
        stop_grace: float = 10.0,
        extra_env: dict[str, str] | None = None,
        instance_env: dict[str, dict[str, str]] | None = None,
        client_auth: dict[str, Any] | None = None,
    ) -> None:
        """`nats_url` may list several servers separated by commas. `instance_env` adds variables
        to one instance's environment (its own NATS credentials, say); `client_auth` are the
        nats-py credentials of the stack's own readiness probes. Without `nats_url` the stack runs
        its own nats-server, open only to the holders of a token made for this stack, and restarts
        it (same store, same port) when it dies, up to `max_restarts` times like any service."""
        self.data_dir = Path(data_dir).resolve()
        self.namespace = namespace
        self.subjects = Subjects(namespace)
        self.ready_timeout = ready_timeout
        self.max_restarts = max_restarts
        self.stop_grace = stop_grace
        self.extra_env = dict(extra_env or {})
        self.instance_env = {name: dict(env) for name, env in (instance_env or {}).items()}
        self.client_auth = dict(client_auth or {})
        self.nats: EmbeddedNats | None = None
        self._external_url = nats_url
        self.bus_restarts = 0
        self.bus_given_up = False  # the embedded nats-server exhausted its restarts and stays down
        self._bus_lock = threading.Lock()  # a revival and stop() never race to launch and stop the server
        self.processes: dict[str, ServiceProcess] = {
            name: ServiceProcess(name, service_of(name), self.data_dir / "logs" / f"{name}.log")
            for name in instance_names(services, runners)
        }
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        """Where clients reach the bus; the embedded server's URL carries its token, so that
        whoever is handed it can connect."""
        if self._external_url:
            return self._external_url
        if self.nats is None:
            raise StackError("the stack is not started")
        return self.nats.url_with_token

    @property
    def instances(self) -> list[str]:
        return list(self.processes)

    @property
    def restarts(self) -> dict[str, int]:
        return {name: p.restarts for name, p in self.processes.items()}

    def start(self) -> Stack:
        (self.data_dir / "logs").mkdir(parents=True, exist_ok=True)
        self._stopping.clear()
        try:
            if not self._external_url:
                self.nats = EmbeddedNats(self.data_dir, token=new_token())
                self.bus_restarts, self.bus_given_up = 0, False
                with quiet_nats_client():
                    off_loop(self.nats.start)
            for name in self.processes:
                self._spawn(name)
            self._supervisor = threading.Thread(target=self._supervise, name="autosota-supervisor", daemon=True)
            self._supervisor.start()
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """SIGTERM every service, SIGKILL what is left after the grace period, then stop nats-server."""
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout=5)
            self._supervisor = None
        with self._lock:
            running = [p for p in self.processes.values() if p.alive]
            for entry in running:
                _signal_group(entry.process, signal.SIGTERM)  # type: ignore[arg-type]
            deadline = time.monotonic() + self.stop_grace
            for entry in running:
                assert entry.process is not None
                try:
                    entry.process.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    _signal_group(entry.process, signal.SIGKILL)
                    entry.process.wait()
            for entry in self.processes.values():
                self._close_log(entry)
        with self._bus_lock:
            if self.nats is not None:
                self.nats.stop()
                self.nats = None

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ readiness

    def wait_ready(self, instances: Iterable[str] | None = None, timeout: float | None = None) -> None:
        """Poll health requests until every named instance is ready, or raise naming the laggards."""
        wanted = set(instances if instances is not None else self.processes)
        limit = self.ready_timeout if timeout is None else timeout
        if not wanted:
            return
        deadline = time.monotonic() + limit
        pending = set(wanted)
        while pending and time.monotonic() < deadline:
            pending -= off_loop(lambda: asyncio.run(ready_instances(self.url, self.subjects, sorted(pending), auth=self.client_auth)))
            if pending <= set(self.failed_for_good()):
                break  # nothing left that could still come up
            if pending:
                self._stopping.wait(0.1)  # pace the polling; health requests without responders return at once
        if pending:
            tails = "\n".join(f"--- {name} ({self.processes[name].log_path}) ---\n{log_tail(self.processes[name].log_path)}" for name in sorted(pending))
            raise StackError(f"services not ready after {time.monotonic() - deadline + limit:.0f} s: {', '.join(sorted(pending))}\n{tails}")

    # ------------------------------------------------------------ control of one instance

    def kill(self, instance: str, revive: bool = False) -> None:
        """SIGKILL an instance, as a crash would, and return once it is gone. It stays down until
        restart() unless revive=True, when the supervisor brings it back as after any crash."""
        with self._lock:
            entry = self.processes[instance]
            entry.held_down = not revive
            if entry.alive:
                assert entry.process is not None
                _signal_group(entry.process, signal.SIGKILL)
                # a SIGKILLed process takes milliseconds to die: until then it would still look alive
                # to pid(), and a second kill could hit the process this one already killed
                entry.process.wait()

    def restart(self, instance: str, wait: bool = True) -> None:
        """Stop an instance gracefully if it runs, start it again, and wait until it is ready."""
        with self._lock:
            entry = self.processes[instance]
            entry.held_down = True
            if entry.alive:
                assert entry.process is not None
                _signal_group(entry.process, signal.SIGTERM)
                try:
                    entry.process.wait(self.stop_grace)
                except subprocess.TimeoutExpired:
                    _signal_group(entry.process, signal.SIGKILL)
                    entry.process.wait()
            self._spawn(instance)
            entry.held_down = False
            entry.given_up = False
        if wait:
            self.wait_ready([instance])

    def pid(self, instance: str) -> int | None:
        # under the lock: Popen.poll() reports a dead process as running while another thread reaps it
        with self._lock:
            entry = self.processes[instance]
            return entry.process.pid if entry.alive else None  # type: ignore[union-attr]

    def kill_bus(self) -> None:
        """SIGKILL the embedded nats-server, as a crash would; the supervisor restarts it."""
        if self.nats is None:
            raise StackError("the stack runs no nats-server of its own")
        self.nats.kill()

    # ------------------------------------------------------------ processes

    def environment(self, instance: str) -> dict[str, str]:
        env = dict(os.environ)
        if self.nats is not None:
            # the token travels in the environment, readable by this user only, never in a URL a log could show
            env.update({variable: "" for variable in FOREIGN_CREDENTIALS})
            env[TOKEN_VARIABLE] = self.nats.token or ""
        env.update(
            {
                "NATS_URL": self.nats.url if self.nats is not None else self.url,
                "AUTOSOTA_DATA_DIR": str(self.data_dir),
                "AUTOSOTA_NAMESPACE": self.namespace,
                "OMP_NUM_THREADS": "1",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")])),
                "PYTHONUNBUFFERED": "1",
            }
        )
        if service_of(instance) == "runner":
            env["AUTOSOTA_RUNNER_NAME"] = instance
        env.update(self.extra_env)
        env.update(self.instance_env.get(instance, {}))
        return env

    def _spawn(self, instance: str) -> None:
        entry = self.processes[instance]
        self._close_log(entry)
        entry.log_path.parent.mkdir(parents=True, exist_ok=True)
        entry.log = open(entry.log_path, "ab")  # noqa: SIM115 - kept open for the process's lifetime
        entry.process = subprocess.Popen(
            [sys.executable, "-m", "shared.cli", "service", entry.service],
            env=self.environment(instance),
            stdout=entry.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=str(REPO_ROOT),
        )

    def _supervise(self) -> None:
        """Restart the nats-server or a service process that exits while nobody asked it to, a bounded number of times."""
        while not self._stopping.wait(SUPERVISE_INTERVAL):
            self._revive_bus()
            with self._lock:
                for entry in self.processes.values():
                    if entry.process is None or entry.held_down or entry.alive:
                        continue
                    if entry.given_up:
                        continue
                    code = entry.process.returncode
                    entry.exit_codes.append(code)
                    if entry.restarts >= self.max_restarts:
                        entry.given_up = True
                        continue
                    entry.restarts += 1
                    assert entry.log is not None
                    entry.log.write(f"\n[stack] {entry.instance} exited with {code}; restart {entry.restarts}/{self.max_restarts}\n".encode())
                    entry.log.flush()
                    self._spawn(entry.instance)

    def _revive_bus(self) -> None:
        """Bring a dead embedded nats-server back on its store and port, where the services'
        clients are reconnecting; a failed start counts as a restart and is tried again later."""
        server = self.nats
        if server is None or server.process is None or self.bus_given_up or server.running:
            return
        while not self._stopping.is_set():
            if self.bus_restarts >= self.max_restarts:
                self.bus_given_up = True
                self._note_bus(server, f"nats-server stays down after {self.max_restarts} restarts")
                return
            self.bus_restarts += 1
            self._note_bus(server, f"nats-server exited with {server.process.returncode}; restart {self.bus_restarts}/{self.max_restarts}")
            try:
                with self._bus_lock:
                    if self._stopping.is_set():
                        return
                    server.launch()
                with quiet_nats_client():
                    server.wait_ready(BUS_READY_TIMEOUT)
                return
            except (OSError, RuntimeError, TimeoutError) as error:
                self._note_bus(server, f"nats-server did not come back: {error}")
                self._stopping.wait(min(5.0, 0.25 * 2**self.bus_restarts))

    @staticmethod
    def _note_bus(server: EmbeddedNats, line: str) -> None:
        with contextlib.suppress(OSError), open(server.log_path, "a") as log:
            log.write(f"\n[stack] {line}\n")

    @staticmethod
    def _close_log(entry: ServiceProcess) -> None:
        if entry.log is not None:
            with contextlib.suppress(OSError):
                entry.log.close()
            entry.log = None

    def failed_for_good(self) -> list[str]:
        """Instances that exhausted their restarts and stay down."""
        return [p.instance for p in self.processes.values() if p.given_up]


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)
