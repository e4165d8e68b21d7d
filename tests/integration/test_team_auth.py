"""The authenticated team server (issue 30): `scripts/team_server.sh start --auth` on loopback,
users made with `python -m tools.team_users`, the platform's entry points signed in as them.

One server per module (SQLite backend and user store in the module's folder: no PostgreSQL
needed; tests/integration/test_scaleout.py runs the load and restart test against PostgreSQL
with authentication on). Passwords travel only in environment variables and files.
"""
from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from test_bad_inputs import store_from_template  # noqa: F401 (autouse fixture)
from test_scaleout import REPO, TeamServer, _env, _tiny_segmentation_set

MODEL = "pathology-tumor"


class Users:
    def __init__(self, server: TeamServer, admin_password: str):
        self.server, self.passwords = server, {"admin": admin_password}

    def env(self, user: str | None, **extra: str) -> dict[str, str]:
        env = _env(self.server.uri, MLFLOW_HTTP_REQUEST_MAX_RETRIES="2", MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="1",
                   **extra)
        env.pop("MLFLOW_TRACKING_USERNAME", None)
        env.pop("MLFLOW_TRACKING_PASSWORD", None)
        if user:
            env.update(MLFLOW_TRACKING_USERNAME=user, MLFLOW_TRACKING_PASSWORD=self.passwords[user])
        return env

    def run(self, user: str | None, *args: str, timeout: float = 600, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], cwd=REPO, env=self.env(user, **extra), capture_output=True,
                              text=True, timeout=timeout)

    def add(self, user: str, role: str, tmp: Path) -> None:
        pwfile = tmp / f"{user}.pw"  # made by the tool: a new random password, owner-only
        done = self.run("admin", "-m", "tools.team_users", "add", user, "--role", role, "--password-file", str(pwfile))
        assert done.returncode == 0, done.stdout + done.stderr
        assert pwfile.stat().st_mode & 0o077 == 0
        self.passwords[user] = pwfile.read_text().strip()


@pytest.fixture(scope="module")
def auth_team(tmp_path_factory):
    home = tmp_path_factory.mktemp("team-auth")
    admin_file = home / "admin.pw"  # the file form; the environment form is used by test_scaleout
    admin_file.write_text("Adm-" + secrets.token_hex(8) + "\n")
    admin_file.chmod(0o600)
    server = TeamServer(f"sqlite:///{home / 'mlflow.db'}", home, auth=True)
    out = server.start(env={"MEDIMG_TEAM_ADMIN_PASSWORD_FILE": str(admin_file)})
    assert "authentication: basic-auth" in out
    users = Users(server, admin_file.read_text().strip())
    done = users.run("admin", "-m", "tools.team_users", "setup")
    assert done.returncode == 0 and MODEL in done.stdout, done.stdout + done.stderr
    for user, role in (("tina", "trainer"), ("rosa", "registry"), ("rick", "reader")):
        users.add(user, role, home)
    try:
        yield users
    finally:
        server.stop()


def _status(url: str, user: str | None = None, password: str = "") -> int:
    request = urllib.request.Request(url)
    if user:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _one_error_line(done: subprocess.CompletedProcess) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip() and "Warning" not in line
             and not line.startswith(("  ", "from starlette"))]
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


def test_requests_without_a_valid_user_are_refused(auth_team):
    url = auth_team.server.uri + "/api/2.0/mlflow/experiments/search?max_results=1"
    assert _status(auth_team.server.uri + "/health") == 200  # the script's readiness probe stays open
    assert _status(url) == 401
    assert _status(url, "tina", "not-her-password") == 401
    assert _status(url, "tina", auth_team.passwords["tina"]) == 200
    line = _one_error_line(auth_team.run(None, "-m", "registry.promote", "--dry-run", "true"))
    assert "not authenticated" in line and "MLFLOW_TRACKING_USERNAME" in line


@pytest.mark.slow
def test_trainer_trains_but_only_the_registry_role_moves_aliases(auth_team, tmp_path):
    from mlflow.tracking import MlflowClient

    seg = _tiny_segmentation_set(tmp_path / "seg")
    train = auth_team.run("tina", "-m", "projects.pathology", "--data", str(seg), "--arch", "unet", "--filters", "2",
                          "--depth", "3", "--tile-size", "64", "--epochs", "1", "--batch-size", "4",
                          "--cpu-predict-n", "2", "--patience", "0", "--log-model", "true",
                          MEDIMG_STORE=str(tmp_path / "unused"))
    assert train.returncode == 0, train.stdout[-1500:] + train.stderr[-3000:]
    os.environ.update(MLFLOW_TRACKING_USERNAME="rosa", MLFLOW_TRACKING_PASSWORD=auth_team.passwords["rosa"])
    try:
        client = MlflowClient(tracking_uri=auth_team.server.uri, registry_uri=auth_team.server.uri)
        exp = client.get_experiment_by_name("pathology")
        (run,) = client.search_runs([exp.experiment_id], "tags.registry_candidate = 'true'")

        # a trainer may not register a version; the registry role registers the run and moves an alias
        line = _one_error_line(auth_team.run("tina", "-m", "registry.promote", "--register", run.info.run_id))
        assert "user 'tina'" in line and "MANAGE on registered models" in line, line
        assert client.search_model_versions(f"name = '{MODEL}'") == []
        done = auth_team.run("rosa", "-m", "registry.promote", "--register", run.info.run_id)
        assert done.returncode == 0, done.stdout + done.stderr
        (version,) = client.search_model_versions(f"name = '{MODEL}'")
        client.set_registered_model_alias(MODEL, "champion", version.version)

        def registry_state():
            model = client.get_registered_model(MODEL)
            versions = client.search_model_versions(f"name = '{MODEL}'")
            evaluations = [e for e in client.search_experiments() if e.name.startswith("registry-")]
            runs = client.search_runs([e.experiment_id for e in evaluations]) if evaluations else []
            return (dict(model.aliases), model.tags, sorted((v.version, tuple(sorted(v.tags.items()))) for v in versions),
                    len(runs))

        before = registry_state()
        assert before[0] == {"champion": version.version}

        # the trainer: promote, rollback and register are each refused in one line, nothing moves
        for args in (["--model", MODEL], [], ["--rollback", MODEL, "champion"]):
            line = _one_error_line(auth_team.run("tina", "-m", "registry.promote", *args))
            assert "permission denied" in line and "user 'tina'" in line and "MANAGE on registered models" in line, line
            assert registry_state() == before, args

        # the registry role runs the whole policy
        done = auth_team.run("rosa", "-m", "registry.promote")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "summary:" in done.stdout

        # a reader may read but not write
        line = _one_error_line(auth_team.run("rick", "-m", "registry.promote", "--model", MODEL))
        assert "user 'rick'" in line
        os.environ.update(MLFLOW_TRACKING_USERNAME="rick", MLFLOW_TRACKING_PASSWORD=auth_team.passwords["rick"])
        assert client.get_registered_model(MODEL).aliases

        # no password anywhere: process listings, the server's files, params and tags
        passwords = set(auth_team.passwords.values())
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                text = cmdline.read_bytes().decode(errors="replace")
            except OSError:
                continue
            assert not [p for p in passwords if p in text], cmdline
        for path in auth_team.server.home.rglob("*"):
            if path.is_file() and not path.name.endswith((".pw", ".db")) and path.stat().st_size < 50_000_000:
                text = path.read_bytes().decode(errors="replace")
                assert not [p for p in passwords if p in text], path
        exps = [e.experiment_id for e in client.search_experiments()]
        for logged in client.search_runs(exps):
            blob = repr((logged.data.params, logged.data.tags))
            assert not [p for p in passwords if p in blob], logged.info.run_id
    finally:
        os.environ.pop("MLFLOW_TRACKING_USERNAME", None)
        os.environ.pop("MLFLOW_TRACKING_PASSWORD", None)
