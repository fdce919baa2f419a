#!/usr/bin/env python3
"""Generate every secret the deployment needs, once, so that no example password ever runs.

Writes deploy/.env (Docker Compose) and deploy/k8s/secrets/{nats-users,postgres}.env (read by the
secretGenerator of deploy/kustomization.yaml). Existing files are kept unless --force is given:
replacing them would lock running services out of the bus. None of these files is committed.

    python3 scripts/generate-secrets.py [--deploy DIR] [--force]
"""

from __future__ import annotations

import argparse
import secrets
import sys
from pathlib import Path

USERS = ("resource", "objective", "init", "monitor", "fix", "ideator", "scheduler", "supervisor", "runner", "cli", "admin", "sys")


def new_secret() -> str:
    # letters and digits only, starting with a letter: nats-server reads a leading digit as a number
    return "p" + secrets.token_hex(24)


def render(values: dict[str, str]) -> str:
    return "".join(f"{key}={value}\n" for key, value in values.items())


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deploy", type=Path, default=Path(__file__).resolve().parents[1] / "deploy")
    parser.add_argument("--force", action="store_true", help="replace secrets that already exist")
    args = parser.parse_args(argv)
    route, postgres = new_secret(), new_secret()
    passwords = {user: new_secret() for user in USERS}
    files = {
        args.deploy / ".env": render({"POSTGRES_PASSWORD": postgres, "NATS_ROUTE_PASSWORD": route, **{f"NATS_PASSWORD_{u.upper()}": p for u, p in passwords.items()}}),
        args.deploy / "k8s" / "secrets" / "nats-users.env": render({"route": route, **passwords}),
        args.deploy / "k8s" / "secrets" / "postgres.env": render({"password": postgres}),
    }
    existing = [path for path in files if path.exists()]
    if existing and not args.force:
        print(f"kept the existing secrets in {', '.join(map(str, existing))} (--force replaces them)", file=sys.stderr)
        return 0
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.chmod(0o600)
        path.write_text(text)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
