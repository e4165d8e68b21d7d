"""Watch searches live: optuna-dashboard on the storage a search uses, bound to 127.0.0.1.

    python -m projects.search.watch                       # the default storage (optuna.db beside mlflow.db)
    python -m projects.search.watch --storage journal:searches.log --port 8081
    make optuna-dashboard SEARCH_STORAGE=postgresql://user@host/optuna

The storage is resolved exactly as `-e search -P storage=...` resolves it, so the same words
open the same studies (a journal file included, which the optuna-dashboard command cannot
take as `journal:<file>`). The dashboard reads the storage while workers write to it: trials
appear as they finish, intermediate values as they are reported. It only listens on the
loopback interface (it has no authentication); reach it from elsewhere through an SSH tunnel.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from projects.core import cli, tracking
from projects.core.errors import InputError
from projects.search.factories import quiet_optuna, resolve_storage_url, safe_url

HOST = "127.0.0.1"


def storage_for(url: str):
    """What optuna-dashboard opens: the RDB URL as it is, a journal file as a JournalStorage."""
    if not url.startswith("journal:"):
        return url
    path = Path(url[len("journal:"):])
    if not path.is_file():
        raise InputError("--storage", f"no journal file {path} (has a search written to it yet?)")
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(path)))


@cli.entry_point
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m projects.search.watch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--storage", default="", help="the search's storage (default: optuna.db beside mlflow.db)")
    parser.add_argument("--port", type=cli.integer, default=8080)
    args = parser.parse_args(argv)
    tracking.setup_tracking()
    url = resolve_storage_url(args.storage)
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).is_file():
        raise InputError("--storage", f"no Optuna database at {url[len('sqlite:///'):]} (run a search first)")
    storage = storage_for(url)
    quiet_optuna()
    from optuna_dashboard import run_server

    print(f"optuna-dashboard on {safe_url(url)}: http://{HOST}:{args.port}/dashboard (Ctrl-C stops it)",
          file=sys.stderr, flush=True)
    run_server(storage, host=HOST, port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
