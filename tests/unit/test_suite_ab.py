"""tools/suite_ab.py: which tests two suites share, how their files are grouped for the
interleaved runs, and the report from junit files (no suite is run here)."""
from __future__ import annotations

from tools.suite_ab import file_groups, match_tests, report

OLD = ["tests/test_registry.py::test_promote[pg]", "tests/test_registry.py::TestAlias::test_move",
       "tests/test_search.py::test_cli", "tests/test_faults.py::test_cli", "tests/test_main_job.py::test_smoke"]
NEW = ["tests/integration/test_registry.py::test_promote[pg]", "tests/integration/test_registry.py::test_move",
       "tests/integration/test_search.py::test_cli", "tests/integration/test_faults.py::test_cli",
       "tests/unit/test_training.py::test_auto", "tests/integration/test_registry.py::test_promote[sqlite]"]


def test_tests_match_across_moved_files_classes_and_parameters():
    matched = match_tests(OLD, NEW)
    assert matched == {
        "tests/test_registry.py::test_promote[pg]": "tests/integration/test_registry.py::test_promote[pg]",
        "tests/test_registry.py::TestAlias::test_move": "tests/integration/test_registry.py::test_move",
        # a name two files share matches by its file, not by the name alone
        "tests/test_search.py::test_cli": "tests/integration/test_search.py::test_cli",
        "tests/test_faults.py::test_cli": "tests/integration/test_faults.py::test_cli",
    }


def test_a_name_that_is_not_unique_and_whose_file_was_renamed_stays_unmatched():
    assert match_tests(["tests/test_a.py::test_cli", "tests/test_b.py::test_cli"],
                       ["tests/test_c.py::test_cli"]) == {}


def test_files_with_shared_tests_run_as_one_group():
    ids = {"old": OLD, "new": NEW}
    groups = file_groups(ids, match_tests(OLD, NEW))
    assert {"old": ["tests/test_registry.py"], "new": ["tests/integration/test_registry.py"]} in groups
    assert {"old": [], "new": ["tests/unit/test_training.py"]} in groups
    assert {"old": ["tests/test_main_job.py"], "new": []} in groups
    assert len(groups) == 5  # registry, search, faults, training, main job
    for side in ("old", "new"):
        files = [f for g in groups for f in g[side]]
        assert sorted(files) == sorted({t.split("::")[0] for t in ids[side]})


def _junit(path, cases):
    rows = "".join(f'<testcase classname="{c}" name="{n}" time="{t}"/>' for c, n, t in cases)
    path.write_text(f'<testsuites><testsuite name="pytest">{rows}</testsuite></testsuites>')


def test_report_sums_shared_tests_and_lists_the_rest(tmp_path):
    _junit(tmp_path / "000_old.xml", [("tests.test_registry", "test_promote[pg]", 10.0),
                                      ("tests.test_registry.TestAlias", "test_move", 2.0),
                                      ("tests.test_main_job", "test_smoke", 20.0)])
    _junit(tmp_path / "000_new.xml", [("tests.integration.test_registry", "test_promote[pg]", 12.0),
                                      ("tests.integration.test_registry", "test_move", 1.0),
                                      ("tests.unit.test_training", "test_auto", 0.5)])
    text = report(match_tests(OLD, NEW), tmp_path)
    assert text.splitlines()[0] == "shared tests (2): old 12 s, new 13 s, new/old 1.083"
    assert "whole old suite: 32 s over 3 tests" in text and "whole new suite: 14 s over 3 tests" in text
    assert "+2.0  tests/test_registry.py::test_promote[pg]" in text
    assert "only in the new suite: 1 tests, 0 s" in text and "tests/unit/test_training.py::test_auto" in text
    assert "only in the old suite: 1 tests, 20 s" in text
