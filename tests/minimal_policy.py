"""The smallest valid promotion policy, which policy and gate tests edit into the case they need."""

MINIMAL_POLICY = """
model: pathology-tumor
study: pathology
task: tumor
gates:
  beats_baseline: {metric: test_jaccard, above: [baseline_jaccard_all_background]}
aliases:
  champion: {pick: max test_jaccard}
"""
