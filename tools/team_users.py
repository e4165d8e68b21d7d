"""Users and roles of the team server started with `scripts/team_server.sh start --auth`.

    export MLFLOW_TRACKING_URI=http://127.0.0.1:5000
    export MLFLOW_TRACKING_USERNAME=admin MLFLOW_TRACKING_PASSWORD=...   # the admin (from the environment)
    python -m tools.team_users setup                      # roles, and every policy's registered model
    MEDIMG_USER_PASSWORD=... python -m tools.team_users add alice --role trainer
    python -m tools.team_users add bob --role registry --password-file ~/.medimg-team/bob.pw
    python -m tools.team_users list

Roles (MLflow RBAC roles in the default workspace; everyone signed in reads, the server's
default_permission is READ):

    trainer   EDIT on every experiment: create and edit runs, logged models, artifacts; MANAGE on
              runs, because a search deletes the twin parent run a lost answer made
              (projects/search/parent.py) and the load test its twin runs
    registry  the same (promotion logs holdout evaluations and audit runs) and MANAGE on every
              registered model: register versions, move aliases, tag versions
    reader    READ on experiments and registered models (what the default gives; explicit so
              that a server with default_permission = NO_PERMISSIONS still lets readers read)

Why `setup` registers the policies' models as the admin: MLflow lets any signed-in user create
a registered model and makes its creator its manager. Were a trainer the first to promote, the
trainer would own the model; registered by the admin first, only the registry role manages it.

Passwords: the new user's comes from MEDIMG_USER_PASSWORD or the first line of --password-file
(a file that does not exist yet gets a new random password, owner-only); never an argument.
"""
from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.server import get_app_client
from mlflow.tracking import MlflowClient

from projects.core import cli, private_api, tracking
from projects.core.errors import InputError
from registry.policy import load_policies
from registry.store import ensure_registered_model

PASSWORD_ENV = "MEDIMG_USER_PASSWORD"
ROLES: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    "trainer": ("create and edit runs in the experiments", (("experiment", "EDIT"), ("run", "MANAGE"))),
    "registry": ("runs in the experiments, and manage registered models (aliases, version tags)",
                 (("experiment", "EDIT"), ("run", "MANAGE"), ("registered_model", "MANAGE"))),
    "reader": ("read experiments and registered models", (("experiment", "READ"), ("registered_model", "READ"))),
}
ROLE_PREFIX = "medimg-"  # role names on the server: medimg-trainer, ...


def _workspace() -> str:
    """MLflow's default workspace, which roles belong to; its name is only in an internal module."""
    return private_api.private_attr("mlflow.utils.workspace_utils", "DEFAULT_WORKSPACE_NAME", dist="mlflow",
                                    reason="roles are created in a workspace and MLflow exports no name for the "
                                           "default one", waits_for="a public constant for the default workspace")


def _auth_client() -> Any:
    uri = tracking.setup_tracking()
    if not uri.startswith(("http://", "https://")):
        raise InputError("MLFLOW_TRACKING_URI", f"{uri} is not a tracking server (http://...)")
    if not os.environ.get("MLFLOW_TRACKING_USERNAME") or not os.environ.get("MLFLOW_TRACKING_PASSWORD"):
        raise InputError("MLFLOW_TRACKING_USERNAME", "set it and MLFLOW_TRACKING_PASSWORD to the admin's "
                                                     "credentials (the environment, never the command line)")
    return get_app_client("basic-auth", tracking_uri=uri)  # MLflow's documented door to the auth API


def ensure_roles(client: Any) -> dict[str, int]:
    """Each role on the server with exactly its permissions; returns role name -> id."""
    existing = {r.name: r for r in client.list_roles(_workspace())}
    ids = {}
    for role, (description, grants) in ROLES.items():
        name = ROLE_PREFIX + role
        found = existing.get(name) or client.create_role(_workspace(), name, description)
        have = {(p.resource_type, p.resource_pattern, p.permission) for p in client.list_role_permissions(found.id)}
        for resource_type, permission in grants:
            if (resource_type, "*", permission) not in have:
                client.add_role_permission(found.id, resource_type, "*", permission)
        ids[role] = found.id
    return ids


def register_policy_models() -> list[str]:
    """Every policy's registered model, created by the caller (the admin) when missing."""
    client = MlflowClient()
    names = []
    for name, policy in sorted(load_policies().items()):
        ensure_registered_model(client, name, policy)
        names.append(name)
    return names


def new_password(password_file: str | None) -> str:
    if os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV]
    if not password_file:
        raise InputError("--password-file", f"give one, or set {PASSWORD_ENV} (never a password argument)")
    path = Path(password_file).expanduser()
    if path.is_file():
        first = path.read_text().splitlines()[:1]
        if not first or not first[0].strip():
            raise InputError(path, "the first line holds no password")
        return first[0].strip()
    password = secrets.token_urlsafe(18)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(password + "\n")
    print(f"a new password for the user is in {path} (owner-only)")
    return password


def add_user(client: Any, username: str, role: str, password: str) -> None:
    ids = ensure_roles(client)
    try:
        client.create_user(username, password)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise InputError("--password-file" if "password" in str(exc).lower() else username,
                             exc.message.splitlines()[0]) from None
        client.update_user_password(username, password)
    current = {r.name for r in client.list_user_roles(username)}
    for other, role_id in ids.items():  # one role per user: a changed role replaces the old one
        if other != role and ROLE_PREFIX + other in current:
            client.unassign_role(username, role_id)
    if ROLE_PREFIX + role not in current:
        client.assign_role(username, ids[role])


@cli.entry_point
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.team_users", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("setup", help="create the roles and register every policy's model (as the admin)")
    add = sub.add_parser("add", help="create a user (or set its password) with one role")
    add.add_argument("username")
    add.add_argument("--role", required=True, choices=sorted(ROLES))
    add.add_argument("--password-file", default=None, help=f"first line: the password (else {PASSWORD_ENV})")
    sub.add_parser("list", help="the roles, their permissions and how many users hold each")
    args = parser.parse_args(argv)
    client = _auth_client()
    if args.command == "setup":
        ensure_roles(client)
        models = register_policy_models()
        print(f"roles: {', '.join(ROLE_PREFIX + r for r in ROLES)}; registered models: {', '.join(models) or 'none'}")
    elif args.command == "add":
        add_user(client, args.username, args.role, new_password(args.password_file))
        print(f"user {args.username}: role {ROLE_PREFIX}{args.role}")
    else:
        # MLflow's client lists a role's assignments by user id only (no user listing API).
        for role, role_id in ensure_roles(client).items():
            grants = ", ".join(f"{p.permission} on {p.resource_type} {p.resource_pattern}"
                               for p in client.list_role_permissions(role_id))
            print(f"{ROLE_PREFIX}{role}: {len(client.list_role_users(role_id))} user(s); {grants}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
