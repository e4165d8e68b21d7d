"""python -m dashboards [--out DIR] [--ui-url URL] [--no-log]  (the `dashboard` entry point)"""
from __future__ import annotations

import argparse
import sys

from projects.core import cli


@cli.entry_point
def main(argv: list[str] | None = None) -> int:
    from dashboards import build

    parser = argparse.ArgumentParser(prog="python -m dashboards", description=build.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None,
                        help=f"folder for the HTML pages (default {build.DEFAULT_OUT})")
    parser.add_argument("--ui-url", default=build.DEFAULT_UI_URL,
                        help="base address of the MLflow UI, for the links to runs")
    parser.add_argument("--no-log", action="store_true",
                        help="only write the files; do not log them to a dashboard run")
    args = parser.parse_args(argv)
    index = (build.build if args.no_log else build.build_and_log)(args.out, args.ui_url)
    print(index)
    return 0


if __name__ == "__main__":
    sys.exit(main())
