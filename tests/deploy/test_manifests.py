"""The container image, compose file, Kubernetes manifests and NATS configuration, checked
mechanically: no container engine or cluster runs here, so each file must at least parse and
refer only to images, commands, settings, users and subjects that exist in the code."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.bus import nats_server_binary
from shared.subjects import SERVICES, Subjects
from tests.deploy.conftest import DEPLOY, ROOT, accepted_by_cli, autosota_argv, settings_env_names

AGENTS = [service for service in SERVICES if service != "runner"]
IMAGE = "autosota/autosota:0.1.0"
UNRESTRICTED = {"admin", "sys"}  # operators' users, given to no service
NATS_CONFIGS = [DEPLOY / "nats" / "nats-server.conf", DEPLOY / "nats" / "cluster.conf", *sorted((DEPLOY / "nats" / "loopback").glob("*.conf"))]
# variables an image other than ours reads: the official postgres image, and our NATS configuration
POSTGRES_IMAGE_ENV = {"POSTGRES_DB", "POSTGRES_USER", "POSTGRES_PASSWORD", "PGDATA"}


def config_variables(path: Path) -> set[str]:
    """The $VARIABLES a NATS configuration (with its includes) takes from the environment."""
    text = path.read_text()
    found = {m for m in re.findall(r"(?<![\"\w])\$([A-Z][A-Z0-9_]*)", _without_comments(text))}
    for include in re.findall(r"^\s*include\s+(\S+)", text, flags=re.M):
        found |= config_variables((path.parent / include).resolve())
    return found


def _without_comments(text: str) -> str:
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def nats_users() -> dict[str, dict[str, list[str]]]:
    """Each user of accounts.conf with its publish and subscribe allow lists."""
    text = _without_comments((DEPLOY / "nats" / "accounts.conf").read_text())
    users: dict[str, dict[str, list[str]]] = {}
    blocks = re.split(r"\buser:\s*", text)[1:]
    for block in blocks:
        name = re.match(r"[\w-]+", block).group(0)  # type: ignore[union-attr]
        lists = {kind: re.findall(r'"([^"]+)"', found.group(1)) for kind in ("publish", "subscribe") if (found := re.search(kind + r":\s*\{\s*allow:\s*\[(.*?)\]", block, re.S))}
        users[name] = {"publish": lists.get("publish", []), "subscribe": lists.get("subscribe", [])}
    return users


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS wildcard matching: * is one token, > the rest."""
    want, have = pattern.split("."), subject.split(".")
    for index, token in enumerate(want):
        if token == ">":
            return len(have) > index
        if index >= len(have) or (token != "*" and token != have[index]):
            return False
    return len(want) == len(have)


JETSTREAM_API_PREFIXES = (
    "$JS.API.STREAM.INFO.", "$JS.API.STREAM.CREATE.", "$JS.API.STREAM.MSG.GET.", "$JS.API.STREAM.MSG.DELETE.",
    "$JS.API.CONSUMER.CREATE.", "$JS.API.CONSUMER.DURABLE.CREATE.", "$JS.API.CONSUMER.INFO.", "$JS.API.CONSUMER.MSG.NEXT.",
    "$JS.API.CONSUMER.DELETE.", "$JS.API.DIRECT.GET.", "$JS.ACK.", "$JS.FC.",
)


def stream_of(pattern: str) -> str | None:
    """The stream a JetStream API, acknowledgement or flow-control subject refers to."""
    for prefix in JETSTREAM_API_PREFIXES:
        if pattern.startswith(prefix):
            return pattern[len(prefix) :].split(".")[0]
    return None


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def k8s_documents() -> list[dict[str, Any]]:
    documents = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        documents += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return documents


def pod_containers(document: dict[str, Any]) -> list[dict[str, Any]]:
    if document["kind"] in ("Deployment", "StatefulSet"):
        return document["spec"]["template"]["spec"]["containers"]  # type: ignore[no-any-return]
    return []


NATS_ENV = {"NATS_SERVER_NAME", "NATS_ROUTE_PASSWORD", "NATS_ROUTE_1", "NATS_ROUTE_2", "NATS_ROUTE_3"}


def password_env() -> dict[str, str]:
    return {name: "test-secret" for name in config_variables(DEPLOY / "nats" / "cluster.conf")} | {
        "NATS_SERVER_NAME": "n1",
        "NATS_ROUTE_1": "nats://route:x@127.0.0.1:6222",
        "NATS_ROUTE_2": "nats://route:x@127.0.0.1:6223",
        "NATS_ROUTE_3": "nats://route:x@127.0.0.1:6224",
    }


# ---------------------------------------------------------------- NATS configuration


@pytest.mark.parametrize("path", NATS_CONFIGS, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_nats_configurations_are_valid_for_the_server(path: Path) -> None:
    checked = subprocess.run([nats_server_binary(), "-t", "-c", str(path)], env=password_env(), capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_service_has_its_own_user_and_publishes_only_its_own_events() -> None:
    users = nats_users()
    assert set(SERVICES) | {"cli", "admin", "sys"} <= set(users)
    subjects = Subjects()
    for service in SERVICES:
        published = [p for p in users[service]["publish"] if p.startswith(f"{subjects.root}.evt.")]
        assert published == [f"{subjects.root}.evt.{service}.>"], f"{service} may publish events {published}"
    assert not [p for p in users["cli"]["publish"] if p.startswith(f"{subjects.root}.evt.")]


def test_only_runners_pull_work_and_only_dispatchers_publish_it() -> None:
    users, subjects = nats_users(), Subjects()
    for name, allowed in users.items():
        if name in UNRESTRICTED:
            continue
        pulls = [p for p in allowed["publish"] if subject_matches(p, f"$JS.API.CONSUMER.MSG.NEXT.{subjects.work_stream}.runner-cpu")]
        assert bool(pulls) == (name == "runner"), f"{name} pulls work: {pulls}"
        publishes = [p for p in allowed["publish"] if subject_matches(p, subjects.work("cpu"))]
        assert bool(publishes) == (name in ("scheduler", "supervisor")), f"{name} publishes work: {publishes}"


def test_only_people_publish_control_messages() -> None:
    users, subjects = nats_users(), Subjects()
    for name, allowed in users.items():
        if name in UNRESTRICTED:
            continue
        controls = [p for p in allowed["publish"] if subject_matches(p, subjects.control("campaign.start"))]
        assert bool(controls) == (name == "cli"), f"{name} publishes control messages: {controls}"


def test_permissions_name_only_subjects_and_streams_of_the_code() -> None:
    subjects = Subjects()
    samples = [
        *(subjects.event(s, "c1", "Event") for s in SERVICES),
        subjects.work("cpu"),
        subjects.telemetry("c1", "e1"),
        subjects.control("campaign.start"),
        *(subjects.health(s) for s in SERVICES),
    ]
    streams = {subjects.events_stream, subjects.work_stream, subjects.telemetry_stream, f"OBJ_{subjects.artifacts_bucket}"}
    for name, allowed in nats_users().items():
        for pattern in allowed["publish"] + allowed["subscribe"]:
            if pattern.startswith(subjects.root + "."):
                assert any(subject_matches(pattern, s) for s in samples), f"{name}: {pattern} matches no subject of the code"
            stream = stream_of(pattern)
            if stream is None or stream in {"*", ">"} or stream.startswith(f"{subjects.work_stream}_") or stream.startswith("KV_"):
                continue  # no stream; wildcards; the runner's own result and dead-letter streams
            assert stream in streams, f"{name}: {pattern} names stream {stream}, which the code does not create"


# ---------------------------------------------------------------- image


def test_one_image_runs_every_service_chosen_at_start() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    instructions = [line.split(None, 1) for line in dockerfile.splitlines() if line.strip() and not line.startswith((" ", "#"))]
    entrypoint = [json for keyword, json in instructions if keyword == "ENTRYPOINT"]
    assert entrypoint == ['["autosota"]\n'.strip()]
    for keyword, argument in instructions:
        if keyword == "COPY":
            source = shlex.split(argument)[0]
            assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
    assert "pip install --no-cache-dir ." in dockerfile
    scripts = (ROOT / "pyproject.toml").read_text()
    assert 'autosota = "shared.cli:main"' in scripts


# ---------------------------------------------------------------- compose


def test_compose_runs_the_cluster_the_database_every_agent_and_both_runners() -> None:
    services = compose()["services"]
    assert {"nats-1", "nats-2", "nats-3", "postgres", *AGENTS, "runner-cpu", "runner-gpu"} <= set(services)
    gpu = services["runner-gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices and devices[0]["capabilities"] == ["gpu"]
    assert gpu["environment"]["AUTOSOTA_POOL"] == "gpu" and services["runner-cpu"]["environment"]["AUTOSOTA_POOL"] == "cpu"


def test_compose_services_use_our_image_commands_settings_and_users() -> None:
    known_env, users = settings_env_names(), nats_users()
    ours = {name: s for name, s in compose()["services"].items() if s.get("image") == IMAGE}
    assert set(AGENTS) | {"runner-cpu", "runner-gpu", "cli"} == set(ours)
    for name, service in ours.items():
        assert service["build"]["dockerfile"] == "deploy/Dockerfile" and (DEPLOY / service["build"]["context"]).resolve() == ROOT
        assert accepted_by_cli(service["command"]), f"{name}: `autosota {' '.join(service['command'])}`"
        environment = service["environment"]
        unknown = set(environment) - known_env
        assert not unknown, f"{name} sets variables shared/settings.py does not read: {unknown}"
        user = environment["AUTOSOTA_NATS_USER"]
        assert user in users
        assert environment["AUTOSOTA_NATS_PASSWORD"].startswith(f"${{NATS_PASSWORD_{user.upper()}")
        if service["command"][0] == "service":
            assert user == service["command"][1], f"{name} connects as {user}"
            probe = service["healthcheck"]["test"]
            argv = autosota_argv(probe[1:])
            assert accepted_by_cli(argv) and argv[1] == environment.get("AUTOSOTA_RUNNER_NAME", name)


def test_compose_nats_servers_get_every_variable_their_configuration_needs() -> None:
    services = compose()["services"]
    for name in ("nats-1", "nats-2", "nats-3"):
        server = services[name]
        config = server["command"][server["command"].index("-c") + 1]
        assert config.startswith("/etc/nats/") and (DEPLOY / "nats" / Path(config).name).is_file()
        assert set(server["environment"]) == config_variables(DEPLOY / "nats" / Path(config).name)
    assert set(services["postgres"]["environment"]) <= POSTGRES_IMAGE_ENV


def test_compose_example_environment_names_every_secret_the_file_needs() -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    needed = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    example = {line.split("=", 1)[0] for line in (DEPLOY / "env.example").read_text().splitlines() if line and not line.startswith("#")}
    assert needed == example


# ---------------------------------------------------------------- Kubernetes


def test_kubernetes_agents_are_deployments_and_gpu_runners_request_gpus() -> None:
    documents = k8s_documents()
    deployments = {d["metadata"]["name"]: d for d in documents if d["kind"] == "Deployment"}
    assert set(AGENTS) <= set(deployments)
    for agent in AGENTS:
        assert deployments[agent]["spec"]["replicas"] == 1 and deployments[agent]["spec"]["strategy"]["type"] == "Recreate"
    gpu = next(d for d in documents if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "runner-gpu")
    container = pod_containers(gpu)[0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"name": "AUTOSOTA_POOL", "value": "gpu"} in container["env"]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in documents}
    assert {("StatefulSet", "nats"), ("StatefulSet", "postgres"), ("Service", "nats"), ("Service", "postgres")} <= kinds
    nats = next(d for d in documents if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "nats")
    assert nats["spec"]["replicas"] == 3


def generated_secrets(tmp_path: Path) -> dict[str, set[str]]:
    """The Secrets kustomize builds from what scripts/generate-secrets.py writes: name -> keys."""
    subprocess.run(["python3", str(ROOT / "scripts" / "generate-secrets.py"), "--deploy", str(tmp_path)], check=True, capture_output=True)
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    found: dict[str, set[str]] = {}
    for generator in kustomization["secretGenerator"]:
        for env_file in generator["envs"]:
            lines = (tmp_path / env_file).read_text().splitlines()
            found.setdefault(generator["name"], set()).update(line.split("=", 1)[0] for line in lines if line)
    return found


def test_no_example_secret_ships_and_every_generated_one_is_random(tmp_path: Path) -> None:
    shipped = [path for path in DEPLOY.rglob("*") if path.is_file() and "change-me" in path.read_text(errors="replace")]
    assert not shipped, f"example passwords ship in {shipped}"
    assert all(not line.split("=", 1)[1] for line in (DEPLOY / "env.example").read_text().splitlines() if line and not line.startswith("#"))
    generated_secrets(tmp_path)
    values = [line.split("=", 1)[1] for line in (tmp_path / ".env").read_text().splitlines()]
    assert len(set(values)) == len(values) and all(len(v) >= 32 and v[0].isalpha() for v in values)
    # the services refuse an example password even when someone sets one by hand
    from shared.bus import client_auth
    from shared.settings import Settings

    with pytest.raises(ValueError, match="generate-secrets"):
        client_auth(Settings(nats_user="runner", nats_password="change-me"))


def test_the_monitoring_port_answers_on_loopback_only() -> None:
    for config in NATS_CONFIGS:
        text = _without_comments(config.read_text())
        assert "http_port" not in text and re.search(r"^\s*http:\s*127\.0\.0\.1:\d+", text, re.M), config


def test_kubernetes_containers_use_known_images_commands_settings_and_secrets(tmp_path: Path) -> None:
    documents = k8s_documents()
    secrets = generated_secrets(tmp_path)
    config_maps = {d["metadata"]["name"]: d["data"] for d in documents if d["kind"] == "ConfigMap"}
    known_env, users = settings_env_names(), nats_users()
    assert set(config_maps["autosota-settings"]) <= known_env
    assert set(users) - {"route"} <= secrets["autosota-nats-users"]
    for document in documents:
        for container in pod_containers(document):
            name = document["metadata"]["name"]
            env = {e["name"]: e for e in container.get("env", [])}
            for entry in env.values():
                reference = entry.get("valueFrom", {}).get("secretKeyRef")
                if reference:
                    assert reference["key"] in secrets[reference["name"]], f"{name}: secret {reference} does not exist"
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] in config_maps
            image = container["image"]
            if image.startswith("nats:"):
                assert set(env) == config_variables(DEPLOY / "nats" / "cluster.conf")
                continue
            if image.startswith("postgres:"):
                assert set(env) <= POSTGRES_IMAGE_ENV
                continue
            assert image == IMAGE, f"{name} runs unknown image {image}"
            unknown = set(env) - known_env
            assert not unknown, f"{name} sets variables shared/settings.py does not read: {unknown}"
            user = env["AUTOSOTA_NATS_USER"]["value"]
            assert user in users and env["AUTOSOTA_NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == user
            if container.get("command") == ["sleep", "infinity"]:
                assert user == "cli"  # the people's toolbox: `kubectl exec ... -- autosota ...`
                continue
            assert accepted_by_cli(container["args"]) and container["args"][0] == "service"
            assert user == container["args"][1] and user in users
            assert env["AUTOSOTA_NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == user
            probe = container["readinessProbe"]["exec"]["command"]
            argv = autosota_argv(probe, {"AUTOSOTA_RUNNER_NAME": "runner-gpu-0"})
            assert accepted_by_cli(argv) and argv[0] == "health"


def test_kustomization_lists_every_manifest_and_the_shipped_nats_configuration() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    listed = {DEPLOY / r for r in kustomization["resources"]}
    assert listed == set((DEPLOY / "k8s").glob("*.yaml"))
    assert all(env.startswith("k8s/secrets/") for g in kustomization["secretGenerator"] for env in g["envs"])
    files = kustomization["configMapGenerator"][0]["files"]
    assert all((DEPLOY / f).is_file() for f in files)
    nats = next(d for d in k8s_documents() if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "nats")
    container = pod_containers(nats)[0]
    config = container["args"][container["args"].index("-c") + 1]
    assert Path(config).name in {Path(f).name for f in files}
