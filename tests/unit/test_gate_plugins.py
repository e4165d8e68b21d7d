"""Gates are plug-ins: the built-in ones are found by a scan of registry/gates/, a toy gate
from the tests folder (tests/toy_gate.py, added through MEDIMG_GATES) becomes a policy key
with its own parameters and a place in the chain, and the passed-gate record has one writer
and one reader. (The toy gate deciding a real promotion: tests/integration/test_toy_gate_promotion.py.)"""
from __future__ import annotations

import pytest

from projects.core.errors import InputError
from registry import gates as G
from registry.policy import load_policy, schema
from minimal_policy import MINIMAL_POLICY

POLICY = MINIMAL_POLICY


def test_the_built_in_gates_run_in_the_default_order():
    assert [g.name for g in G.chain()] == list(G.DEFAULT_ORDER)
    assert [g.stage for g in G.chain()][:4] == [G.CANDIDATE, G.CANDIDATE, G.HOLDOUT, G.HOLDOUT]


def test_a_toy_gate_is_a_policy_key_with_its_own_parameters(toy_gate, tmp_path):
    assert G.chain()[-1].name == "size_cap"  # not in the default order: last of its stage
    assert "size_cap" in schema()["$defs"]["Gates"]["properties"]
    path = tmp_path / "pathology-tumor.yaml"
    path.write_text(POLICY.replace("gates:\n", "gates:\n  size_cap: {mb: 0.3}\n"))
    policy = load_policy(path)
    assert policy.gates.size_cap.mb == 0.3 and "model_size_mb" in policy.all_metrics()
    assert [g.name for g, _ in policy.chain()][-2:] == ["smoke", "size_cap"]

    path.write_text(POLICY.replace("gates:\n", "gates:\n  size_cap: {mb: 0.3}\n  order: [metrics, size_cap]\n"))
    names = [g.name for g, _ in load_policy(path).chain()]
    assert names.index("size_cap") < names.index("data")  # the policy's order, within the gate's stage

    for text, problem in (("size_cap: {mb: big}", "gates.size_cap: mb: expected a finite number, got 'big'"),
                          ("size_cap: {mb: 1, gb: 2}", "gates.size_cap: unknown key 'gb' (allowed here: mb)")):
        path.write_text(POLICY.replace("gates:\n", f"gates:\n  {text}\n"))
        with pytest.raises(InputError, match=f"{path}: {problem}".replace("(", r"\(").replace(")", r"\)")):
            load_policy(path)


def test_without_the_plug_in_its_key_is_unknown(tmp_path):
    path = tmp_path / "pathology-tumor.yaml"
    path.write_text(POLICY.replace("gates:\n", "gates:\n  size_cap: {mb: 0.3}\n"))
    with pytest.raises(InputError, match="gates: unknown key 'size_cap'"):
        load_policy(path)


def test_a_gate_name_is_one_lower_case_word():
    class Bad(G.Gate):
        name = "Size Cap"

    with pytest.raises(ValueError, match="lower-case"):
        G.register_gate(Bad)


@pytest.mark.parametrize("gates, earlier, text", [
    (["metrics", "baseline", "smoke"], "", "passed: metrics, baseline, smoke"),
    ([("smoke", "re-checked for the rollback")], "passed: metrics, smoke",
     "passed: smoke (re-checked for the rollback); when promoted passed: metrics, smoke"),
])
def test_the_passed_record_has_one_writer_and_one_reader(gates, earlier, text):
    assert G.passed_text(gates, earlier) == text
    record = G.read_passed(text)
    assert [g for g, _ in record.gates] == [g if isinstance(g, str) else g[0] for g in gates]
    assert record.earlier == earlier
    assert G.passed_text([(g, n) for g, n in record.gates], record.earlier) == text


def test_records_written_before_the_plug_ins_still_read():
    old = "passed: metrics, baseline, holdout_clean, holdout_baseline, data, not_rolled_back, pareto, smoke"
    assert [g for g, _ in G.read_passed(old).gates] == list(G.DEFAULT_ORDER)
    assert G.read_passed("something else").text == "something else" and not G.read_passed("").gates
