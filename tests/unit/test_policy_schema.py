"""Policies are parsed by pydantic models whose JSON schema is published beside them
(registry/policies/schema.json): the committed schema is the generated one, every policy of
the repository validates, and a mistake is still one line naming the file and the key."""
from __future__ import annotations

import json

import pytest

from projects.core.errors import InputError
from registry.policy import POLICY_DIR, SCHEMA_FILE, load_policy, main, schema
from minimal_policy import MINIMAL_POLICY

GOOD = MINIMAL_POLICY


def test_the_committed_schema_is_the_generated_one():
    assert json.loads(SCHEMA_FILE.read_text()) == schema(), \
        "registry/policies/schema.json is stale: run `python -m registry.policy --schema`"
    gates = schema()["$defs"]["Gates"]["properties"]
    assert {"required_metrics", "beats_baseline", "pareto", "smoke_predict", "data_change", "order"} <= set(gates)


def test_every_repository_policy_validates_and_names_the_schema():
    paths = sorted(POLICY_DIR.glob("*.yaml"))
    assert len(paths) >= 7
    for path in paths:
        assert path.read_text().startswith("# yaml-language-server: $schema=./schema.json\n"), path
        load_policy(path)
    assert main([]) == 0


def test_the_schema_command_writes_the_file(tmp_path, capsys):
    assert main(["--schema", "--out", str(tmp_path / "schema.json")]) == 0
    assert json.loads((tmp_path / "schema.json").read_text()) == schema()


@pytest.mark.parametrize("change, problem", [
    (("study: pathology", "study: pathology\ncolour: blue"), "unknown key 'colour' (allowed here: aliases, "),
    (("gates:\n", "gates:\n  colour: 1\n"), "gates: unknown key 'colour' (allowed here: beats_baseline, "),
    (("gates:\n", "gates:\n  smoke_predict: {probs: true}\n"), "gates.smoke_predict: unknown key 'probs'"),
    (("gates:\n", "gates:\n  smoke_predict: 3\n"), "gates: smoke_predict: expected true or false or a mapping, got 3"),
    (("gates:\n", "gates:\n  required_metrics: [test_jaccard, jaccard]\n"),
     "gates.required_metrics[1]: unknown metric 'jaccard'"),
    (("gates:\n", "gates:\n  data_change: maybe\n"), "gates: data_change: expected one of refuse, allow, got 'maybe'"),
    (("gates:\n", "gates:\n  order: [metrics, nope]\n"), "gates.order: unknown gate 'nope'"),
    (("gates:\n", "gates:\n  pareto: {accuracy: test_jaccard, costs: []}\n"),
     "gates.pareto: costs: name at least one cost metric"),
    (("above: [baseline_jaccard_all_background]", "above: [true]"),
     "gates.beats_baseline: above: expected metric names or numbers, got True"),
    (("task: tumor", "task: tumor\ndescription: 3"), "description: expected text, got int"),
    (("task: tumor", "task: tumor\ncandidates: {max_age_days: -1}"), "candidates: max_age_days: must be at least 0, got -1"),
    (("task: tumor", "task: tumor\ncandidates: {since: yesterday}"), "candidates: since: expected a date like 2025-01-31"),
    (("task: tumor", "task: tumor\nevaluation: {shortlist: 0}"), "evaluation: shortlist: must be at least 1, got 0"),
    (("{pick: max test_jaccard}", "{pick: max test_jaccard, significance: {level: 3}}"),
     "aliases.champion: significance: the level must be in (0, 1), got 3"),
    (("{pick: max test_jaccard}", "{pick: max test_jaccard, when_none: drop}"),
     "aliases.champion: when_none: expected one of keep, remove, got 'drop'"),
    (("{pick: max test_jaccard}", "{pick: max test_jaccard, pareto: true}"),
     "aliases.champion: pareto: true needs gates.pareto"),
    (("  champion: {pick: max test_jaccard}", "  efficient: {pick: max test_jaccard}"),
     "gates.data_change: refuse compares with the 'champion' alias"),
    (("task: tumor", "task: nope"), "task: expected one of tumor, got 'nope'"),
])
def test_a_mistake_is_one_line_naming_the_file_and_the_key(tmp_path, change, problem):
    path = tmp_path / "pathology-tumor.yaml"
    assert change[0] in GOOD
    path.write_text(GOOD.replace(*change))
    with pytest.raises(InputError) as err:
        load_policy(path)
    text = str(err.value)
    assert str(path) in text and problem in text and "\n" not in text, text


def test_defaults_are_the_documented_ones(tmp_path):
    path = tmp_path / "pathology-tumor.yaml"
    path.write_text(GOOD.replace("aliases:\n", "aliases:\n  other: {pick: min model_size_mb, significance: none}\n"))
    policy = load_policy(path)
    assert policy.alias("champion").significance == 0.05 and policy.alias("other").significance is None
    assert policy.gates.smoke_predict is True and policy.gates.data_change == "refuse"
    assert policy.candidates.experiments[-1] == "search" and policy.evaluation.mode == "holdout"
    assert policy.aliases[0].alias == "champion"
