"""The `autosota` command line: run a campaign, run one service, probe health, read the history.

Each command is a thin layer over a function that tests can call without a terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import importlib.util
import json
import logging
import os
import re
import secrets
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rich.console import Console

from shared.contracts import Budget, CampaignCompleted, Event
from shared.history import StoredMessage, admitted_event, admitted_events, read_messages
from shared.readmodel import CampaignSummary, progress_line, render_markdown, render_text
from shared.subjects import SERVICES, Subjects

CAMPAIGN_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
DOCUMENT_NATS_URL = "nats://127.0.0.1:4222"  # the server named in the published AsyncAPI documents
START_ATTEMPTS = 3
START_TIMEOUT = 10.0
CLI_RECONNECT_ATTEMPTS = 3
RUN_DEFAULT_RUNNERS = 2
RESUBSCRIBE_DELAY = 0.5
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_STOPPED = 3
EXIT_NOT_REPRODUCED = 4
EXIT_INTERRUPTED = 130

RUN_EPILOG = """exit status: 0 when the campaign is certified or ends not improved (the baseline
was reproduced and nothing beat it), 1 when it failed, 2 when it could not be started
(missing paper folder, bad arguments, start refused), 3 when a person stopped it
(`autosota stop`), 4 when the paper's code did not reproduce the paper's number within the
tolerance (`[objective] reproduction_tolerance`; by default the larger of 2 % of the reported
value and three seed standard deviations), and with --continue-unreproduced when the search then
ran against the measured baseline, 130 when interrupted."""


def console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def fail(message: str, code: int = EXIT_FAILED) -> int:
    console(stderr=True).print(f"error: {message}", markup=False)
    return code


# ---------------------------------------------------------------- settings from the environment


def env_namespace() -> str:
    from shared.settings import Settings

    return Settings().namespace


def env_data_dir(explicit: str | None) -> Path:
    return Path(explicit or os.environ.get("AUTOSOTA_DATA_DIR") or ".autosota").resolve()


def new_campaign_id(paper_dir: Path) -> str:
    """A readable, unique campaign id: the folder name as a slug plus 8 hex digits."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", paper_dir.resolve().name).strip("-_")[:60] or "paper"
    return f"{slug}-{secrets.token_hex(4)}"


# ---------------------------------------------------------------- reading the events stream


async def connect_bus(url: str, name: str = "autosota-cli", reconnect_attempts: int = CLI_RECONNECT_ATTEMPTS, **callbacks: Any) -> Any:
    """A client of the CLI; `reconnect_attempts=-1` reconnects without end."""
    import nats

    from shared.bus import client_auth
    from shared.settings import Settings, server_urls

    return await nats.connect(
        server_urls(url), name=name, connect_timeout=5, max_reconnect_attempts=reconnect_attempts, reconnect_time_wait=0.5, error_cb=quietly, **callbacks, **client_auth(Settings(), url)
    )


async def quietly(error: Exception) -> None:
    """Connection errors surface as exceptions to the caller; the client need not print them too."""


async def read_subject(js: Any, stream: str, subject: str) -> list[bytes]:
    """Every message body on a subject filter, in stream order, as of now."""
    return [message.data for message in await read_messages(js, stream, subject)]


def admitted(subjects: Subjects, message: Any) -> Event | None:
    """A message from the bus as the services would take it: None when forged or malformed."""
    return admitted_event(subjects, StoredMessage.of(message))


async def campaign_bodies(url: str, subjects: Subjects, campaign: str) -> list[bytes]:
    client = await connect_bus(url)
    try:
        return await read_subject(client.jetstream(), subjects.events_stream, subjects.events_of_campaign(campaign))
    finally:
        await client.close()


async def campaign_events(url: str, subjects: Subjects, campaign: str) -> list[Event]:
    """The campaign's events that its services accepted, in stream order (forgeries left out)."""
    client = await connect_bus(url)
    try:
        return admitted_events(subjects, await read_messages(client.jetstream(), subjects.events_stream, subjects.events_of_campaign(campaign)))
    finally:
        await client.close()


@dataclass(frozen=True)
class CampaignStatus:
    campaign: str
    events: int
    started: str
    outcome: str
    reason: str


async def campaign_statuses(url: str, subjects: Subjects) -> list[CampaignStatus]:
    """Every campaign in the events stream, with its outcome if it has completed."""
    from nats.js.errors import NotFoundError

    client = await connect_bus(url)
    try:
        js = client.jetstream()
        try:
            info = await js.stream_info(subjects.events_stream, subjects_filter=subjects.all_events)
        except NotFoundError:
            return []
        counts: dict[str, int] = {}
        for subject, count in (info.state.subjects or {}).items():
            parts = subject[len(subjects.root) + 1 :].split(".")  # evt.<service>.<campaign>.<EventType>
            if len(parts) == 4:
                counts[parts[2]] = counts.get(parts[2], 0) + count
        rows = []
        for campaign, count in counts.items():
            started = await _last_event(js, subjects, subjects.event("scheduler", campaign, "CampaignStarted"))
            completed = await _last_event(js, subjects, subjects.event("scheduler", campaign, "CampaignCompleted"))
            rows.append(
                CampaignStatus(
                    campaign=campaign,
                    events=count,
                    started=started.time.strftime("%Y-%m-%d %H:%M:%S") if started and started.time else "-",
                    outcome=completed.outcome if isinstance(completed, CampaignCompleted) else "running",
                    reason=completed.reason if isinstance(completed, CampaignCompleted) else "",
                )
            )
        return sorted(rows, key=lambda row: (row.started, row.campaign))
    finally:
        await client.close()


async def _last_event(js: Any, subjects: Subjects, subject: str) -> Event | None:
    from nats.js.errors import NotFoundError

    try:
        raw = await js.get_last_msg(subjects.events_stream, subject)
    except NotFoundError:
        return None
    return admitted(subjects, raw)


@contextlib.contextmanager
def bus_for_reading(data_dir: Path) -> Iterator[str]:
    """NATS_URL when set, else a private nats-server on the data dir's store for as long as needed,
    open only to the token its URL carries."""
    url = os.environ.get("NATS_URL")
    if url:
        yield url
        return
    if not (data_dir / "nats").is_dir():
        raise FileNotFoundError(f"no event store under {data_dir} (set NATS_URL or pass --data-dir)")
    from shared.bus import EmbeddedNats, new_token
    from shared.embedded import quiet_nats_client

    server = EmbeddedNats(data_dir, token=new_token())
    try:
        with quiet_nats_client():
            server.start()
        yield server.url_with_token
    finally:
        server.stop()


# ---------------------------------------------------------------- running a campaign


class CampaignRefused(RuntimeError):
    """The scheduler did not accept the campaign."""


class CampaignNotStarted(RuntimeError):
    """Nobody answered the start request."""


class BusDied(RuntimeError):
    """The embedded stack's nats-server is down and its restarts are spent."""


async def request_start(url: str, subjects: Subjects, request: dict[str, Any], attempts: int = START_ATTEMPTS, timeout: float = START_TIMEOUT) -> dict[str, Any]:
    """Ask the scheduler to start a campaign; retried because it may still be starting."""
    from nats.errors import NoRespondersError
    from nats.errors import TimeoutError as RequestTimeout

    client = await connect_bus(url)
    try:
        subject = subjects.control("campaign.start")
        for attempt in range(1, attempts + 1):
            try:
                reply = await client.request(subject, json.dumps(request).encode(), timeout=timeout)
                return json.loads(reply.data)  # type: ignore[no-any-return]
            except (RequestTimeout, NoRespondersError) as error:
                if attempt == attempts:
                    raise CampaignNotStarted(f"the scheduler did not answer {subject} after {attempts} attempts ({type(error).__name__})") from None
                await asyncio.sleep(min(2.0, 0.25 * 2**attempt))
        raise AssertionError("unreachable")
    finally:
        await client.close()


async def request_stop(url: str, subjects: Subjects, campaign: str, reason: str, timeout: float = START_TIMEOUT) -> dict[str, Any]:
    """Ask the scheduler to stop a campaign."""
    client = await connect_bus(url)
    try:
        reply = await client.request(subjects.control("campaign.stop"), json.dumps({"campaign": campaign, "reason": reason}).encode(), timeout=timeout)
        return json.loads(reply.data)  # type: ignore[no-any-return]
    finally:
        await client.close()


async def follow_campaign(
    url: str,
    subjects: Subjects,
    campaign: str,
    on_event: Callable[[Event], None],
    check: Callable[[], None] | None = None,
    wait_for_bus: bool = False,
) -> None:
    """Deliver the campaign's events from the start, in order, each once, until it completes.
    `check` is called every second without an event. With `wait_for_bus`, a server that goes
    away is waited for without end (`check` decides when to give up), and once it is back the
    events resume after the last one delivered."""
    import nats.errors
    from nats.errors import TimeoutError as NoMessageYet
    from nats.js.api import ConsumerConfig, DeliverPolicy

    reconnected = asyncio.Event()

    async def on_reconnect() -> None:
        reconnected.set()  # a restarted server has lost the ordered consumer: make a new one

    client = await connect_bus(url, reconnect_attempts=-1 if wait_for_bus else CLI_RECONNECT_ATTEMPTS, reconnected_cb=on_reconnect)
    js = client.jetstream()
    subscription = None
    delivered = 0  # stream sequence of the last message handed on
    try:
        while True:
            if subscription is None or reconnected.is_set():
                reconnected.clear()
                if subscription is not None:
                    with contextlib.suppress(Exception):
                        await subscription.unsubscribe()
                    subscription = None
                try:
                    subscription = await js.subscribe(
                        subjects.events_of_campaign(campaign),
                        stream=subjects.events_stream,
                        ordered_consumer=True,
                        config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=delivered + 1),
                    )
                except (nats.errors.Error, TimeoutError, ConnectionError):
                    if not wait_for_bus:
                        raise
                    if check:
                        check()
                    await asyncio.sleep(RESUBSCRIBE_DELAY)  # JetStream may still be recovering its streams
                    continue
            try:
                message = await subscription.next_msg(timeout=1.0)
            except NoMessageYet:
                if check:
                    check()
                continue
            if message.metadata.sequence.stream <= delivered:
                continue  # delivered before the consumer was made anew
            delivered = message.metadata.sequence.stream
            event = admitted(subjects, message)
            if event is not None:
                on_event(event)
                if isinstance(event, CampaignCompleted):
                    return
    finally:
        # closing flushes to a server that may be gone: that must not hide why the following ended
        with contextlib.suppress(ConnectionError):
            await client.close()


@dataclass(frozen=True)
class RunResult:
    campaign: str
    outcome: str | None
    text: str
    report_path: Path
    reproduced: bool | None = None

    @property
    def exit_code(self) -> int:
        if self.outcome == "stopped":
            return EXIT_STOPPED
        if self.outcome == "not_reproduced" or (self.outcome != "failed" and self.reproduced is False):
            return EXIT_NOT_REPRODUCED
        return EXIT_FAILED if self.outcome in (None, "failed") else EXIT_OK


def finish_campaign(events: list[Event], campaign: str, data_dir: Path) -> RunResult:
    """Project the campaign's recorded events into the printed summary and the report file."""
    summary = CampaignSummary.from_events(events, campaign)
    report_path = data_dir / "reports" / f"{campaign}.md"
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(render_markdown(summary, events))
    return RunResult(campaign, summary.outcome, render_text(summary), report_path, summary.reproduced)


async def run_campaign(
    url: str, subjects: Subjects, request: dict[str, Any], data_dir: Path, out: Console, check: Callable[[], None] | None = None, wait_for_bus: bool = False
) -> RunResult:
    """Start (or rejoin) a campaign and follow it to its end; `wait_for_bus` as in follow_campaign."""
    campaign = request["campaign"]
    reply = await request_start(url, subjects, request)
    if not reply.get("accepted"):
        raise CampaignRefused(str(reply.get("error") or reply))
    if reply.get("existing"):
        out.print(f"campaign {campaign} already exists: following its recorded events", markup=False)

    def show(event: Event) -> None:
        line = progress_line(event)
        if line is not None:
            out.print(line, markup=False)

    await follow_campaign(url, subjects, campaign, show, check, wait_for_bus)
    return finish_campaign(await campaign_events(url, subjects, campaign), campaign, data_dir)


def command_run(args: argparse.Namespace) -> int:
    paper_dir = Path(args.paper_dir).expanduser()
    if not paper_dir.is_dir():
        return fail(f"paper folder {paper_dir} does not exist or is not a folder", EXIT_USAGE)
    campaign = args.campaign or new_campaign_id(paper_dir)
    if not CAMPAIGN_PATTERN.match(campaign):
        return fail(f"campaign id {campaign!r} must be 1-80 characters of A-Z a-z 0-9 _ -", EXIT_USAGE)
    defaults = Budget()
    try:
        budget = Budget(
            max_experiments=defaults.max_experiments if args.budget_experiments is None else args.budget_experiments,
            wall_clock_seconds=defaults.wall_clock_seconds if args.budget_seconds is None else args.budget_seconds,
            parallelism=defaults.parallelism if args.parallelism is None else args.parallelism,
        )
        namespace = env_namespace()
    except ValidationError as error:
        return fail(f"invalid settings: {error.errors(include_url=False)}", EXIT_USAGE)
    data_dir = env_data_dir(args.data_dir)
    subjects = Subjects(namespace)
    request = {"campaign": campaign, "paper_path": str(paper_dir.resolve()), "budget": budget.model_dump(), "pool": "cpu", "continue_unreproduced": args.continue_unreproduced}
    out = console()
    url = os.environ.get("NATS_URL")
    stack = None
    try:
        if not url:
            from shared.embedded import Stack

            stack = Stack(data_dir, namespace=namespace, runners=args.runners)
            out.print(f"starting the embedded stack in {data_dir} ({len(stack.instances)} services)", markup=False)
            stack.start()
            url = stack.url
        out.print(f"campaign {campaign}: {paper_dir.resolve()}", markup=False)
        # the stack restarts its own nats-server; the campaign is followed across a restart
        result = asyncio.run(run_campaign(url, subjects, request, data_dir, out, _stack_check(stack), wait_for_bus=stack is not None))
    except KeyboardInterrupt:
        console(stderr=True).print("interrupted: stopping", markup=False)
        return EXIT_INTERRUPTED
    except CampaignRefused as error:
        return fail(f"the scheduler refused campaign {campaign}: {error}", EXIT_USAGE)
    except BusDied as error:
        return fail(f"the bus died: {error}. The campaign's recorded events are kept in {data_dir}; resume it with:\n  {resume_command(args, paper_dir, campaign, data_dir)}")
    except Exception as error:  # noqa: BLE001 - a clear message beats a traceback at the prompt
        logs = f" (service logs: {data_dir / 'logs'})" if stack is not None else ""
        return fail(f"{error}{logs}" if isinstance(error, CampaignNotStarted) else f"{type(error).__name__}: {error}{logs}")
    finally:
        if stack is not None:
            stack.stop()
    sys.stdout.write(result.text)
    sys.stdout.flush()
    out.print(f"report: {result.report_path}", markup=False)
    return result.exit_code


def resume_command(args: argparse.Namespace, paper_dir: Path, campaign: str, data_dir: Path) -> str:
    """The command that re-runs this campaign: the same id picks up its recorded events."""
    words = ["autosota", "run", str(paper_dir.resolve()), "--campaign", campaign, "--data-dir", str(data_dir)]
    for flag, value in (("--budget-experiments", args.budget_experiments), ("--budget-seconds", args.budget_seconds), ("--parallelism", args.parallelism)):
        if value is not None:
            words += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    if args.runners != RUN_DEFAULT_RUNNERS:
        words += ["--runners", str(args.runners)]
    if args.continue_unreproduced:
        words.append("--continue-unreproduced")
    return shlex.join(words)


def _stack_check(stack: Any) -> Callable[[], None] | None:
    if stack is None:
        return None

    def check() -> None:
        if stack.bus_given_up:
            raise BusDied(f"the embedded nats-server stayed down after {stack.max_restarts} restarts (log: {stack.nats.log_path})")
        down = stack.failed_for_good()
        if down:
            raise RuntimeError(f"services down after {stack.max_restarts} restarts: {', '.join(down)} (see {stack.data_dir / 'logs'})")

    return check


# ---------------------------------------------------------------- one service, health


def command_service(args: argparse.Namespace) -> int:
    from shared.settings import Settings

    settings = Settings()
    level = logging.getLevelName(settings.log_level.upper())
    level = level if isinstance(level, int) else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    module = importlib.import_module(f"services.{args.name}.app")
    asyncio.run(module.create_app(settings).run(log_level=level))
    return EXIT_OK


async def instance_ready(url: str, subjects: Subjects, instance: str, timeout: float) -> bool:
    """True once the instance answers its health request with ready=true, within the timeout."""
    import nats

    deadline = time.monotonic() + timeout
    try:
        from shared.bus import client_auth
        from shared.settings import Settings, server_urls

        connecting = nats.connect(server_urls(url), connect_timeout=min(timeout, 2.0), max_reconnect_attempts=1, allow_reconnect=False, error_cb=quietly, **client_auth(Settings(), url))
        client = await asyncio.wait_for(connecting, timeout)
    except Exception:  # noqa: BLE001 - an unreachable server means not ready
        return False
    try:
        while (left := deadline - time.monotonic()) > 0:
            try:
                reply = await client.request(subjects.health(instance), b"", timeout=min(1.0, left))
                if json.loads(reply.data).get("ready") is True:
                    return True
            except Exception:  # noqa: BLE001 - no responder or timeout: ask again
                await asyncio.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        return False
    finally:
        await client.close()


def command_health(args: argparse.Namespace) -> int:
    from shared.settings import Settings

    settings = Settings()
    if asyncio.run(instance_ready(settings.nats_url, settings.subjects, args.instance, args.timeout)):
        console().print(f"{args.instance} ready", markup=False)
        return EXIT_OK
    from shared.bus import without_credentials

    return fail(f"{args.instance} is not ready (no ready answer within {args.timeout} s from {without_credentials(settings.nats_url)})")


# ---------------------------------------------------------------- the recorded history


def command_status(args: argparse.Namespace) -> int:
    subjects = Subjects(env_namespace())
    try:
        with bus_for_reading(env_data_dir(args.data_dir)) as url:
            rows = asyncio.run(campaign_statuses(url, subjects))
    except FileNotFoundError as error:
        return fail(str(error))
    if not rows:
        console().print("no campaigns", markup=False)
        return EXIT_OK
    out = console()
    header = ("campaign", "started (UTC)", "events", "outcome", "reason")
    cells = [header, *((r.campaign, r.started, str(r.events), r.outcome, r.reason) for r in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(4)]
    for row in cells:
        out.print("  ".join([*(cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True)), row[4]]).rstrip(), markup=False)
    return EXIT_OK


def command_replay(args: argparse.Namespace) -> int:
    subjects = Subjects(env_namespace())
    try:
        with bus_for_reading(env_data_dir(args.data_dir)) as url:
            if args.verify:
                from shared.brains.replay import verify_campaign
                from shared.settings import Settings

                report = asyncio.run(verify_campaign(url, Settings(), args.campaign))
                sys.stdout.write(report.text())
                return EXIT_OK if report.ok else EXIT_FAILED
            events = asyncio.run(campaign_events(url, subjects, args.campaign))
    except FileNotFoundError as error:
        return fail(str(error))
    if not events:
        return fail(f"no events for campaign {args.campaign}")
    sys.stdout.write(render_text(CampaignSummary.from_events(events, args.campaign)))
    return EXIT_OK


def command_stop(args: argparse.Namespace) -> int:
    import nats.errors

    from shared.settings import Settings

    settings = Settings()
    try:
        answer = asyncio.run(request_stop(settings.nats_url, settings.subjects, args.campaign, args.reason))
    except (nats.errors.NoRespondersError, nats.errors.TimeoutError, OSError) as error:
        from shared.bus import without_credentials

        return fail(f"the scheduler at {without_credentials(settings.nats_url)} did not answer ({type(error).__name__}): is the stack running, and NATS_URL set?")
    if answer.get("error"):
        return fail(str(answer["error"]))
    said = "stopped; its work is being withdrawn" if answer.get("stopped") else "had already ended"
    console().print(f"campaign {args.campaign} {said}", markup=False)
    return EXIT_OK


def command_events(args: argparse.Namespace) -> int:
    subjects = Subjects(env_namespace())
    try:
        with bus_for_reading(env_data_dir(args.data_dir)) as url:
            bodies = asyncio.run(campaign_bodies(url, subjects, args.campaign))
    except FileNotFoundError as error:
        return fail(str(error))
    for body in bodies:
        try:
            sys.stdout.write(json.dumps(json.loads(body), sort_keys=True) + "\n")
        except ValueError:
            sys.stdout.write(json.dumps({"undecodable": body.decode("utf-8", "replace")}) + "\n")
    return EXIT_OK if bodies else fail(f"no events for campaign {args.campaign}")


# ---------------------------------------------------------------- AsyncAPI documents


def available_services() -> list[str]:
    """The services whose composition root exists in this checkout."""
    found = []
    for service in SERVICES:
        try:
            if importlib.util.find_spec(f"services.{service}.app") is not None:
                found.append(service)
        except ModuleNotFoundError:
            continue
    return found


def specification(service: str) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of one service, independent of the local environment."""
    from shared.settings import Settings

    with tempfile.TemporaryDirectory(prefix="autosota-asyncapi-") as scratch:
        settings = Settings(NATS_URL=DOCUMENT_NATS_URL, data_dir=Path(scratch), namespace="", runner_name="runner-1", persistence="sqlite", pool="cpu", nats_user="", nats_creds=None, nats_nkey_seed=None, nats_token="")
        app = importlib.import_module(f"services.{service}.app").create_app(settings)
        try:
            return app.schema.to_specification().to_jsonable()  # type: ignore[no-any-return]
        finally:
            runtime = getattr(app, "runtime", None)
            if runtime is not None:
                with contextlib.suppress(Exception):
                    runtime.store.close()


def document_text(document: dict[str, Any]) -> str:
    return json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def asyncapi_documents(services: list[str] | None = None) -> dict[str, str]:
    return {service: document_text(specification(service)) for service in (services or available_services())}


def write_documents(directory: Path, documents: dict[str, str]) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for service, text in documents.items():
        path = directory / f"{service}.json"
        path.write_text(text)
        written.append(path)
    return written


def stale_documents(directory: Path, documents: dict[str, str]) -> list[str]:
    """Services whose committed document is missing or differs from what the code generates."""
    stale = []
    for service, text in documents.items():
        path = directory / f"{service}.json"
        if not path.is_file() or path.read_text() != text:
            stale.append(service)
    return stale


def command_asyncapi(args: argparse.Namespace) -> int:
    documents = asyncapi_documents()
    if args.write:
        for path in write_documents(Path(args.write), documents):
            console().print(f"wrote {path}", markup=False)
        return EXIT_OK
    if args.check:
        stale = stale_documents(Path(args.check), documents)
        if stale:
            return fail(f"AsyncAPI documents out of date in {args.check}: {', '.join(stale)} (run: autosota asyncapi --write {args.check})")
        console().print(f"AsyncAPI documents up to date: {', '.join(documents)}", markup=False)
        return EXIT_OK
    sys.stdout.write(json.dumps({s: json.loads(t) for s, t in documents.items()}, sort_keys=True, indent=2) + "\n")
    return EXIT_OK


# ---------------------------------------------------------------- argument parsing


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="autosota", description="Reproduce a paper's baseline, search for improvements, certify them.")
    commands = root.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run a campaign on a paper folder", epilog=RUN_EPILOG)
    run.add_argument("paper_dir", help="folder with the paper's code, data and autosota.toml")
    run.add_argument("--budget-experiments", type=int, help="idea experiments to run (default %d)" % Budget().max_experiments)
    run.add_argument("--budget-seconds", type=float, help="wall-clock budget (default %g)" % Budget().wall_clock_seconds)
    run.add_argument("--continue-unreproduced", action="store_true", help="search on when the baseline does not reproduce the paper's number; every claim is then made against the measured baseline")
    run.add_argument("--parallelism", type=int, help="experiments in flight at once (default %d)" % Budget().parallelism)
    run.add_argument("--runners", type=int, default=RUN_DEFAULT_RUNNERS, help="runner processes of the embedded stack (default %d)" % RUN_DEFAULT_RUNNERS)
    run.add_argument("--data-dir", help="state of the embedded stack and reports (default $AUTOSOTA_DATA_DIR or .autosota)")
    run.add_argument("--campaign", help="campaign id (default: folder name plus 8 hex digits)")
    run.set_defaults(handler=command_run)

    service = commands.add_parser("service", help="run one service in the foreground")
    service.add_argument("name", choices=SERVICES)
    service.set_defaults(handler=command_service)

    health = commands.add_parser("health", help="exit 0 when a service instance answers ready")
    health.add_argument("instance", help="service name, or runner-N")
    health.add_argument("--timeout", type=float, default=5.0)
    health.set_defaults(handler=command_health)

    status = commands.add_parser("status", help="campaigns in the event stream and their outcome")
    status.add_argument("--data-dir")
    status.set_defaults(handler=command_status)

    replay = commands.add_parser("replay", help="rebuild a campaign's summary from its events")
    replay.add_argument("campaign")
    replay.add_argument("--data-dir")
    replay.add_argument("--verify", action="store_true", help="re-run the decisions over the recorded inputs and answers, and compare event by event")
    replay.set_defaults(handler=command_replay)

    stop = commands.add_parser("stop", help="stop a running campaign (on the services at NATS_URL); its work is withdrawn")
    stop.add_argument("campaign")
    stop.add_argument("--reason", default="no reason given")
    stop.set_defaults(handler=command_stop)

    events = commands.add_parser("events", help="a campaign's events as JSON lines, in stream order")
    events.add_argument("campaign")
    events.add_argument("--data-dir")
    events.set_defaults(handler=command_events)

    asyncapi = commands.add_parser("asyncapi", help="the AsyncAPI 3.0 document of every service")
    target = asyncapi.add_mutually_exclusive_group()
    target.add_argument("--write", metavar="DIR", help="write <service>.json files into DIR")
    target.add_argument("--check", metavar="DIR", help="exit 1 naming the services whose document in DIR differs")
    asyncapi.set_defaults(handler=command_asyncapi)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
