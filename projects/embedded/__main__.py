"""Generate the embedded data sets and print where they are.

    python -m projects.embedded {mias,paip,all} [--size N] [--n-images N] [--seed N] [--out DIR]

Without --out the data go to the cache (reused if already there); with --out they are written
into DIR itself for one data set, or DIR/mias and DIR/paip for `all`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from projects.embedded import ensure_mias, ensure_paip
from projects.embedded.mias import generate_mias
from projects.embedded.paip import generate_paip

DEFAULT_SIZE = {"mias": 256, "paip": 512}


def _generate(name: str, size: int, args: argparse.Namespace, out: Path | None) -> Path:
    if name == "mias":
        if out is None:
            return ensure_mias(size, args.seed)
        return generate_mias(out, size=size, seed=args.seed)
    if out is None:
        return ensure_paip(args.n_images, size, args.seed)
    return generate_paip(out, n_images=args.n_images, size=size, seed=args.seed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m projects.embedded", description=__doc__.splitlines()[0]
    )
    parser.add_argument("dataset", choices=["mias", "paip", "all"])
    parser.add_argument("--size", type=int, default=None, help="pixels (default: MIAS 256, PAIP 512)")
    parser.add_argument("--n-images", type=int, default=24, help="PAIP tiles (default 24)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write here instead of the cache")
    args = parser.parse_args(argv)

    names = ["mias", "paip"] if args.dataset == "all" else [args.dataset]
    for name in names:
        out = None if args.out is None else (args.out / name if len(names) > 1 else args.out)
        path = _generate(name, args.size or DEFAULT_SIZE[name], args, out)
        print(Path(path).resolve(), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
