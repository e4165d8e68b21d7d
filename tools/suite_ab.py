"""Does the test suite take longer than before? Two checkouts' suites measured side by side.

    python -m tools.suite_ab --old /tmp/old --new . --out /tmp/suite-ab

Each checkout needs its own environment (`VENV=.venv scripts/install.sh` inside it): an older
commit's dependencies differ. Timings of one suite taken an hour apart on the same machine
differed by 20-48% here, far more than the 10% an issue asks about, so the two suites are
interleaved: tests are matched across the checkouts (same file name and test name with its
parameters, else the test name alone when it is unique on both sides), the files holding
matched tests are grouped, and each group runs as old then new (or new then old, alternating),
every file in its own checkout's interpreter, each file's whole module as CI runs it. The
report sums junit per-test times (setup + call + teardown) over the tests both sides share,
over each side's whole suite, and lists the largest changes and the tests only one side has.
The suites see the caller's environment: set what CI sets (`CI=true MEDIMG_REQUIRE_BROWSER=1`).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

SIDES = ("old", "new")


def _split(test_id: str) -> tuple[str, str]:
    """(file basename, test name with parameters) of a pytest node id; classes are dropped,
    so a test that moved into or out of a class still matches."""
    path, rest = test_id.split("::", 1)
    return Path(path).name, rest.split("::")[-1]


def match_tests(old: list[str], new: list[str]) -> dict[str, str]:
    """old node id -> new node id for the tests both suites hold (see the module docstring)."""
    by_file, by_name = defaultdict(list), defaultdict(list)
    old_names = defaultdict(int)
    for test_id in new:
        base, name = _split(test_id)
        by_file[(base, name)].append(test_id)
        by_name[name].append(test_id)
    for test_id in old:
        old_names[_split(test_id)[1]] += 1
    matched, used = {}, set()
    for test_id in old:
        base, name = _split(test_id)
        candidates = [c for c in by_file[(base, name)] if c not in used]
        if len(candidates) != 1:
            candidates = [c for c in by_name[name] if c not in used] if old_names[name] == 1 else []
        if len(candidates) == 1:
            matched[test_id] = candidates[0]
            used.add(candidates[0])
    return matched


def file_groups(ids: dict[str, list[str]], matched: dict[str, str]) -> list[dict[str, list[str]]]:
    """Test files grouped so that every matched pair lies in one group: {"old": [...], "new": [...]},
    in the new suite's file order (files only one side has form groups of their own)."""
    parent: dict[tuple[str, str], tuple[str, str]] = {}

    def root(node):
        while parent.setdefault(node, node) != node:
            node = parent[node]
        return node

    for side in SIDES:
        for test_id in ids[side]:
            root((side, test_id.split("::")[0]))
    for o, n in matched.items():
        parent[root(("old", o.split("::")[0]))] = root(("new", n.split("::")[0]))
    groups: dict = {}
    for side in ("new", "old"):
        for test_id in ids[side]:
            node = (side, test_id.split("::")[0])
            group = groups.setdefault(root(node), {"old": [], "new": []})
            if node[1] not in group[side]:
                group[side].append(node[1])
    return list(groups.values())


def _python(checkout: Path) -> str:
    return str(checkout / ".venv" / "bin" / "python")


def collect(checkout: Path) -> list[str]:
    out = subprocess.run([_python(checkout), "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
                         cwd=checkout, capture_output=True, text=True, check=False)
    ids = [line.strip() for line in out.stdout.splitlines() if "::" in line]
    if not ids:
        sys.exit(f"{checkout}: pytest collected no tests ({out.stdout[-300:]}{out.stderr[-300:]})")
    return ids


def run_group(index: int, group: dict, checkouts: dict[str, Path], out: Path) -> None:
    order = SIDES if index % 2 == 0 else SIDES[::-1]
    for side in order:
        if not group[side]:
            continue
        checkout = checkouts[side]
        # the environment `make test` gives each checkout: its own venv first on PATH (mlflow run)
        env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", MLFLOW_DISABLE_TELEMETRY="true", HF_HUB_OFFLINE="1",
                   PATH=f"{checkout / '.venv' / 'bin'}:{os.environ['PATH']}")
        started = time.perf_counter()
        done = subprocess.run([_python(checkout), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               f"--junitxml={out / f'{index:03d}_{side}.xml'}", *group[side]],
                              cwd=checkout, env=env, capture_output=True, text=True, check=False)
        last = (done.stdout.strip().splitlines() or ["(no output)"])[-1]
        print(f"[suite-ab] group {index} {side}: {time.perf_counter() - started:.0f} s, {last}", flush=True)


def junit_times(out: Path, side: str) -> dict[str, float]:
    """node id -> seconds (setup + call + teardown) from every junit file of one side."""
    times = {}
    for path in sorted(out.glob(f"*_{side}.xml")):
        for case in ET.parse(path).getroot().iter("testcase"):
            parts = case.get("classname", "").split(".")
            module = max(i for i, part in enumerate(parts) if part.startswith("test_"))
            node = "::".join(["/".join(parts[:module + 1]) + ".py", *parts[module + 1:], case.get("name")])
            times[node] = float(case.get("time", 0))
    return times


def report(matched: dict[str, str], out: Path, top: int = 10) -> str:
    times = {side: junit_times(out, side) for side in SIDES}
    shared = [(o, n) for o, n in matched.items() if o in times["old"] and n in times["new"]]
    old_sum = sum(times["old"][o] for o, _ in shared)
    new_sum = sum(times["new"][n] for _, n in shared)
    lines = [f"shared tests ({len(shared)}): old {old_sum:.0f} s, new {new_sum:.0f} s, "
             f"new/old {new_sum / old_sum if old_sum else float('nan'):.3f}"]
    for side in SIDES:
        lines.append(f"whole {side} suite: {sum(times[side].values()):.0f} s over {len(times[side])} tests")
    changes = sorted(((times["new"][n] - times["old"][o], o) for o, n in shared), reverse=True)
    lines.append("largest changes (new - old, s):")
    shown = changes if len(changes) <= top + 3 else changes[:top] + changes[-3:]  # slowest and fastest
    lines += [f"  {d:+7.1f}  {o}" for d, o in shown]
    only_new = sorted(((s, t) for t, s in times["new"].items() if t not in set(matched.values())), reverse=True)
    lines.append(f"only in the new suite: {len(only_new)} tests, {sum(s for s, _ in only_new):.0f} s")
    lines += [f"  {s:7.1f}  {t}" for s, t in only_new[:top]]
    only_old = [t for t in times["old"] if t not in matched]
    lines.append(f"only in the old suite: {len(only_old)} tests, {sum(times['old'][t] for t in only_old):.0f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.suite_ab", description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", type=Path, required=True, help="checkout of the earlier commit, with its .venv")
    parser.add_argument("--new", type=Path, required=True, help="checkout of the later commit, with its .venv")
    parser.add_argument("--out", type=Path, required=True, help="folder for the plan, junit files and report")
    parser.add_argument("--report-only", action="store_true", help="report on an earlier --out, run nothing")
    args = parser.parse_args(argv)
    checkouts = {"old": args.old.resolve(), "new": args.new.resolve()}
    for side, checkout in checkouts.items():
        if not Path(_python(checkout)).exists():
            parser.error(f"--{side} {checkout}: no .venv/bin/python there (run scripts/install.sh in it)")
    args.out.mkdir(parents=True, exist_ok=True)
    plan_file = args.out / "plan.json"
    if args.report_only:
        plan = json.loads(plan_file.read_text())
    else:
        ids = {side: collect(checkout) for side, checkout in checkouts.items()}
        matched = match_tests(ids["old"], ids["new"])
        plan = {"matched": matched, "groups": file_groups(ids, matched)}
        plan_file.write_text(json.dumps(plan, indent=1))
        print(f"[suite-ab] {len(ids['old'])} old and {len(ids['new'])} new tests, {len(matched)} in both, "
              f"{len(plan['groups'])} groups of files", flush=True)
        for index, group in enumerate(plan["groups"]):
            run_group(index, group, checkouts, args.out)
    text = report(plan["matched"], args.out)
    (args.out / "report.txt").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
