"""The published AsyncAPI documents: committed, current, and complete for every service."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.cli import asyncapi_documents, available_services, main
from shared.contracts import OWNED_EVENTS, MessageRejected
from shared.subjects import SERVICES, Subjects

DOCS = Path(__file__).resolve().parents[2] / "docs" / "asyncapi"


@pytest.fixture(scope="module")
def generated() -> dict[str, str]:
    return asyncapi_documents()


def test_there_are_services_to_document() -> None:
    assert available_services(), "no services/<name>/app.py found"
    assert set(available_services()) <= set(SERVICES)


def test_committed_documents_match_the_code(generated: dict[str, str]) -> None:
    stale = [service for service, text in generated.items() if not (DOCS / f"{service}.json").is_file() or (DOCS / f"{service}.json").read_text() != text]

    assert not stale, f"docs/asyncapi is out of date for {stale}: run `python -m shared.cli asyncapi --write docs/asyncapi`"


def test_each_document_lists_the_events_its_service_publishes(generated: dict[str, str]) -> None:
    subjects = Subjects()
    for service, text in generated.items():
        document = json.loads(text)
        assert document["asyncapi"].startswith("3.")
        for event_class in [*OWNED_EVENTS.get(service, []), MessageRejected]:
            event_type = event_class.model_fields["event_type"].default
            channel = document["channels"].get(f"{service}:{event_type}")
            assert channel is not None, f"{service} does not document {event_type}"
            assert channel["address"] == subjects.event(service, "{campaign}", event_type)
            assert document["operations"][f"{service}:{event_type}"]["action"] == "send"
            assert event_type in document["components"]["schemas"]


def test_each_document_carries_the_health_probe(generated: dict[str, str]) -> None:
    for service, text in generated.items():
        addresses = {channel["address"] for channel in json.loads(text)["channels"].values()}
        instance = "runner-1" if service == "runner" else service
        assert Subjects().health(instance) in addresses, f"{service} lacks its health channel"


def test_check_names_the_services_whose_document_differs(tmp_path: Path, generated: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["asyncapi", "--write", str(tmp_path)]) == 0
    assert main(["asyncapi", "--check", str(tmp_path)]) == 0
    changed = sorted(generated)[0]
    document = json.loads((tmp_path / f"{changed}.json").read_text())
    document["info"]["version"] = "0.0.0"
    (tmp_path / f"{changed}.json").write_text(json.dumps(document))
    capsys.readouterr()

    code = main(["asyncapi", "--check", str(tmp_path)])

    assert code == 1
    assert changed in capsys.readouterr().err


def test_documents_are_sorted_and_indented(generated: dict[str, str]) -> None:
    for text in generated.values():
        assert text == json.dumps(json.loads(text), sort_keys=True, indent=2, ensure_ascii=False) + "\n"
