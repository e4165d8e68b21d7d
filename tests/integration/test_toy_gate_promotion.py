"""A gate defined only in the tests folder (tests/toy_gate.py) decides a real promotion: the
policy, written in a temporary folder, enables it and puts it in the chain; a candidate over
its cap is refused with its words, one under it is promoted, and the version's record and
page list it among the gates passed. Nothing under registry/ names it."""
from __future__ import annotations

from mlflow.tracking import MlflowClient

from registry import gates as G
from registry import promote as P
from registry.policy import load_policy
from test_registry import PATHO, decision, holder, log_candidate, seg_metrics, version_of

POLICY = """
model: pathology-tumor
study: pathology
task: tumor
evaluation: {mode: compare_within, compare_within: [split]}
gates:
  beats_baseline: {metric: test_jaccard, above: [baseline_jaccard_all_background]}
  size_cap: {mb: 0.3}                 # the toy gate, switched on
  order: [metrics, baseline, size_cap, data, not_rolled_back, smoke]
aliases:
  champion: {pick: max test_jaccard}
"""


def test_a_toy_gate_refuses_one_candidate_and_lets_the_other_through(toy_gate, tmp_path):
    path = tmp_path / "pathology-tumor.yaml"
    path.write_text(POLICY)
    policy = load_policy(path)
    big = log_candidate(seg_metrics(0.70, size_mb=0.50), seed=1)  # the most accurate, over the cap
    small = log_candidate(seg_metrics(0.60, size_mb=0.10), seed=2)

    report = P.promote_model(PATHO, policy=policy)
    champion = decision(report, "champion")
    assert champion.status == P.MOVED and holder("champion") == version_of(small)
    assert version_of(big) is None
    assert any(why == "size_cap: model_size_mb 0.5 is over the cap of 0.3 MB" for _, why in champion.refused), \
        champion.refused
    assert G.read_passed(champion.gates).gates == tuple(
        (g, "") for g in ("metrics", "baseline", "size_cap", "data", "not_rolled_back", "smoke"))

    mv = MlflowClient().get_model_version(PATHO, version_of(small))
    assert mv.tags[P.promotion_key("champion", "gates")] == champion.gates
    assert "| baseline | passed |\n| size_cap | passed |\n| data | passed |" in mv.description

    # Switched off (the key left out), the toy gate does not run: the better model is promoted.
    path.write_text(POLICY.replace("  size_cap: {mb: 0.3}                 # the toy gate, switched on\n", ""))
    report = P.promote_model(PATHO, policy=load_policy(path))
    assert holder("champion") == version_of(big)
    assert "size_cap" not in decision(report, "champion").gates
