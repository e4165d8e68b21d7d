"""Registry: policies, gates, promotion, rollback and races, on real MLflow stores and models.

Runs are made the way the studies make them (tags and metrics from projects.core.tracking, a
pt2 pyfunc model logged under tracking.MODEL_ARTIFACT) but with tiny torch models, so each
test takes seconds. The end-to-end test trains a real small pathology grid (slow).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient
from torch import nn

from projects.core import artifacts, tracking
from projects.core.study import get_study, study_names
from projects.core.errors import InputError
from registry import gates as G
from registry.gates.pareto import pareto_front
from registry.gates.smoke import GATE_SMOKE
from registry import promote as P
from registry import store
from registry.policy import load_policies, load_policy
from minimal_policy import MINIMAL_POLICY

REPO = Path(__file__).resolve().parents[2]
# The rules, gates, rollback and races are tested on candidates whose own test numbers the test
# sets, compared within one split; the holdout evaluation has its own tests (test_holdout_promotion.py).
pytestmark = pytest.mark.usefixtures("policies_within_split")
PATHO = get_study("pathology").model_name("tumor")
MAMMO = get_study("mammography").model_name("7class")
J = tracking.test_metric("jaccard")


# --- tiny real runs -------------------------------------------------------------------------
class TinyMask(nn.Module):
    """(B, 3, S, S) -> tumour probability (B, 1, S, S), like the pathology study's model."""

    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 1, 3, padding=1)

    def forward(self, x):
        return torch.sigmoid(self.conv(x))


class TinyClassifier(nn.Module):
    """(B, 1, S, S) -> class probabilities (B, n), like the mammography study's model."""

    def __init__(self, seed: int, size: int, n_classes: int = 7):
        super().__init__()
        torch.manual_seed(seed)
        self.fc = nn.Linear(size * size, n_classes)

    def forward(self, x):
        return torch.softmax(self.fc(x.flatten(1)), dim=1)


def seg_metrics(jaccard: float, size_mb: float = 0.5, cpu_s: float = 1.0, latency_ms: float = 5.0,
                background: float = 0.30, tumor: float = 0.10) -> dict[str, float]:
    return {J: jaccard,
            tracking.baseline_metric("jaccard_all_background"): background,
            tracking.baseline_metric("jaccard_all_tumor"): tumor,
            tracking.test_metric("jaccard_minus_baseline"): jaccard - max(background, tumor),
            tracking.M_SIZE_MB: size_mb, tracking.M_CPU_TOTAL: cpu_s, tracking.M_LATENCY_P50: latency_ms,
            tracking.M_PARAMS: 28.0}


def log_candidate(metrics: dict[str, float], *, study: str = "pathology", task: str = "tumor",
                  digest: str = "digest-1", arch: str = "tiny", size: int = 8, seed: int = 0) -> str:
    """A FINISHED run with the studies' tags, the given metrics and a real pt2 pyfunc model."""
    tracking.setup_tracking()
    exp = tracking.ensure_experiment(get_study(study).experiment)
    rng = np.random.default_rng(seed)
    if study == "pathology":
        model, example = TinyMask(seed).eval(), rng.random((2, 3, size, size)).astype(np.float32)
    else:
        model, example = TinyClassifier(seed, size).eval(), rng.random((2, 1, size, size)).astype(np.float32)
    with torch.inference_mode():
        output = model(torch.from_numpy(example)).numpy()
    with mlflow.start_run(experiment_id=exp, run_name=f"{arch}-s{seed}") as run:
        mlflow.set_tags({tracking.TAG_STUDY: study, tracking.TAG_TASK: task, tracking.TAG_ARCH: arch,
                         tracking.TAG_SPLIT: "80:20", tracking.TAG_AUGMENT: "false", tracking.TAG_SEED: str(seed),
                         tracking.TAG_GIT_COMMIT: "test", tracking.TAG_DATASET_DIGEST: digest,
                         tracking.TAG_RUN_KIND: "single"})
        mlflow.log_params({"image_shape": f"{example.shape[1]}x{size}x{size}", "data_root": "embedded-test"})
        mlflow.log_metrics(metrics)
        mlflow.pytorch.log_model(model, name=tracking.MODEL_ARTIFACT, input_example=example,
                                 signature=infer_signature(example, output),
                                 pip_requirements=artifacts.model_pip_requirements())
        mlflow.set_tag(tracking.TAG_CANDIDATE, "true")
    time.sleep(0.01)  # distinct start times: "newer than" rules compare them
    return run.info.run_id


def corrupt_model(run_id: str) -> Path:
    """Overwrite the logged model's weights file with garbage (a damaged artifact store)."""
    client = MlflowClient()
    model_id = client.get_run(run_id).outputs.model_outputs[0].model_id
    location = client.get_logged_model(model_id).artifact_location
    root = Path(location.replace("file://", ""))
    data = root / "data" / "model.pt2"
    assert data.is_file(), sorted(p.name for p in root.rglob("*"))
    data.write_bytes(b"this is not a model" * 100)
    return data


def version_of(run_id: str, name: str = PATHO) -> str | None:
    found = MlflowClient().search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    return str(found[0].version) if found else None


def holder(alias: str, name: str = PATHO) -> str | None:
    try:
        return str(MlflowClient().get_model_version_by_alias(name, alias).version)
    except mlflow.exceptions.MlflowException:
        return None


def registry_snapshot() -> dict:
    """Every registered model, version, alias and tag: what a no-op must leave identical."""
    client = MlflowClient()
    snap = {}
    for model in client.search_registered_models():
        versions = client.search_model_versions(f"name = '{model.name}'")
        snap[model.name] = {"aliases": dict(model.aliases), "tags": dict(model.tags),
                            "description": model.description,
                            "versions": {str(v.version): dict(v.tags) for v in versions}}
    return snap


def promote(name: str = PATHO, **kw):
    return P.promote_model(name, **kw)


def decision(report, alias: str):
    return next(d for d in report.decisions if d.alias == alias)


def assert_consistent(alias: str, name: str = PATHO) -> dict:
    """The alias's holder passed its gates and its audit tags match the trail's last entry."""
    client = MlflowClient()
    version = holder(alias, name)
    assert version is not None
    tags = client.get_model_version(name, version).tags
    trail = P.history(name, alias)
    assert trail and str(trail[-1]["version"]) == version
    assert tags[P.promotion_key(alias, "at")] == trail[-1]["at"]
    assert tags[P.promotion_key(alias, "previous_version")] == ("none" if trail[-1]["previous"] is None
                                                                else str(trail[-1]["previous"]))
    assert tags[P.promotion_key(alias, "gates")].startswith("passed:")
    assert GATE_SMOKE in tags[P.promotion_key(alias, "gates")]
    return tags


# --- policies -----------------------------------------------------------------------------------
def test_repository_policies_cover_every_registered_model():
    policies = load_policies()
    # every task a study registers models for (film and ROI mammography models are distinct)
    expected = {get_study(s).model_name(t) for s in ("pathology", "mammography") for t in get_study(s).tasks}
    assert "mammography-roi_normal_abnormal" in expected and "pathology-tumor" in expected
    assert set(policies) == expected
    for policy in policies.values():
        assert policy.aliases[0].alias == "champion"
        assert policy.gates.beats_baseline is not None and policy.gates.smoke_predict
    patho = policies[PATHO]
    assert patho.alias_names()[:2] == ["champion", "efficient"]
    assert patho.alias("efficient").within.of == "champion"
    assert "within" not in patho.alias("champion").describe()


GOOD = MINIMAL_POLICY


@pytest.mark.parametrize("change, problem", [
    (("aliases:\n  champion: {pick: max test_jaccard}", "aliases:\n  champion: {pick: best test_jaccard}"),
     "aliases.champion: pick: expected 'max <metric>'"),
    (("aliases:\n  champion: {pick: max test_jaccard}", "aliases:\n  champion: {pick: max jaccard}"),
     "unknown metric 'jaccard'"),
    (("study: pathology", "study: pathology\ncolour: blue"), "unknown key 'colour'"),
    (("aliases:\n  champion: {pick: max test_jaccard}",
      "aliases:\n  champion: {pick: max test_jaccard}\n  efficient: {pick: min model_size_mb, "
      "within: {metric: test_jaccard, of: champ, tolerance: 0.01}}"), "refers to alias 'champ'"),
    (("aliases:\n  champion: {pick: max test_jaccard}",
      "aliases:\n  champion: {pick: max test_jaccard}\n  a: {pick: max test_jaccard, newer_than: b}\n"
      "  b: {pick: max test_jaccard, newer_than: a}"), "circular reference"),
    (("model: pathology-tumor", "model: pathology-tumour"), "registers as 'pathology-tumor'"),
    (("aliases:\n  champion: {pick: max test_jaccard}", "aliases:\n  v2: {pick: max test_jaccard}"),
     "invalid alias name 'v2'"),
    (("aliases:\n  champion: {pick: max test_jaccard}",
      "aliases:\n  champion: {pick: max test_jaccard, within: {metric: test_jaccard, of: champion, tolerance: -1}}"),
     "tolerance: must be at least 0"),
    (("task: tumor", "task: tumor\ncandidates: {filter: \"metrics.test_jaccard >>> 1\"}"), "candidates.filter"),
    (("study: pathology", "study: [pathology"), "not valid YAML"),
])
def test_policy_errors_name_the_file_and_the_problem(tmp_path, change, problem):
    path = tmp_path / "pathology-tumor.yaml"
    path.write_text(GOOD.replace(*change))
    with pytest.raises(InputError) as err:
        load_policy(path)
    assert str(path) in str(err.value) and problem in str(err.value), str(err.value)


def test_policy_file_must_be_named_after_its_model(tmp_path):
    path = tmp_path / "tumour.yaml"
    path.write_text(GOOD)
    with pytest.raises(InputError, match="must be named pathology-tumor.yaml"):
        load_policy(path)
    (tmp_path / "pathology-tumor.yaml").write_text(GOOD)
    assert load_policy(tmp_path / "pathology-tumor.yaml").alias("champion").metric == J


def test_pareto_front_keeps_only_undominated_candidates():
    def cand(run_id, acc, size, lat):
        return G.Candidate(run_id, "0", run_id, 0, {J: acc, "model_size_mb": size, "cpu_latency_ms_p50": lat}, {}, {})

    from registry.policy import ParetoSpec

    spec = ParetoSpec(accuracy=J, costs=("model_size_mb", "cpu_latency_ms_p50"))
    cands = [cand("best", 0.9, 10, 10), cand("small", 0.8, 1, 10), cand("fast", 0.7, 10, 1),
             cand("dominated", 0.7, 10, 10), cand("tie-of-small", 0.8, 1, 10)]
    assert pareto_front(cands, spec) == {"best", "small", "fast", "tie-of-small"}


# --- promotion --------------------------------------------------------------------------------------
def test_promotion_sets_aliases_records_why_and_refuses_a_candidate_worse_than_its_baseline(capsys):
    best = log_candidate(seg_metrics(0.60, size_mb=0.50, latency_ms=5.0), seed=1)
    small = log_candidate(seg_metrics(0.595, size_mb=0.10, latency_ms=4.0), seed=2)
    worse = log_candidate(seg_metrics(0.25, size_mb=0.01, latency_ms=1.0), seed=3)  # below all-background 0.30

    report = promote()
    out = capsys.readouterr().out
    champion, efficient = decision(report, "champion"), decision(report, "efficient")
    assert champion.status == P.MOVED and efficient.status == P.MOVED
    assert holder("champion") == version_of(best)
    assert holder("efficient") == version_of(small)
    assert version_of(worse) is None  # refused: never registered
    assert any("does not beat its baseline" in why and "0.2500" in why for _, why in report.refused_all)
    assert "refused for every alias" in out and "does not beat its baseline" in out
    assert "champion" in out and "moved" in out

    tags = assert_consistent("champion")
    assert tags[P.promotion_key("champion", "rule")] == "highest test_jaccard"
    assert tags[P.promotion_key("champion", "metric")] == J
    assert float(tags[P.promotion_key("champion", "value")]) == pytest.approx(0.60)
    assert tags[P.promotion_key("champion", "policy")].startswith("pathology-tumor.yaml@")
    assert tags[P.promotion_key("champion", "previous_version")] == "none"
    compared = json.loads(assert_consistent("efficient")[P.promotion_key("efficient", "compared")])
    assert any(k.startswith("champion") for k in compared)  # the champion's numbers it was compared with
    # The version carries the run's metrics, efficiency and a description of data/split/arch.
    mv = MlflowClient().get_model_version(PATHO, version_of(best))
    assert float(mv.tags[J]) == pytest.approx(0.60) and float(mv.tags[tracking.M_SIZE_MB]) == pytest.approx(0.5)
    assert mv.tags[tracking.TAG_DATASET_DIGEST] == "digest-1"
    for words in ("tiny", "embedded-test", "digest-1", "80:20", "test_jaccard 0.6000"):
        assert words in mv.description
    # ... and, readable on its registry page, the gates it passed for each alias it holds.
    assert "**champion** (holds it; promote " in mv.description
    assert "| gate | result |\n|---|---|\n| metrics | passed |\n| baseline | passed |" in mv.description
    assert "| test_jaccard | 0.6 |" in mv.description
    assert f"/runs/{best}?workflowType=machine_learning)" in mv.description
    # The registered model's page: who holds what, and the moves as a table (not JSON).
    page = MlflowClient().get_registered_model(PATHO).description
    assert f"| champion | [v{version_of(best)}](#/models/{PATHO}/versions/{version_of(best)}) |" in page
    assert "**champion: latest moves** (newest first)" in page and "| promote | highest test_jaccard |" in page
    assert "registry-audit runs](#/experiments/" in page and "{" not in page

    # What the alias serves loads and predicts a mask.
    model = mlflow.pyfunc.load_model(f"models:/{PATHO}@champion")
    mask = model.predict(np.zeros((2, 3, 8, 8), np.float32))
    assert mask.shape == (2, 1, 8, 8) and ((mask >= 0) & (mask <= 1)).all()

    # A second promotion is a no-op: same aliases, no new versions, not one tag rewritten.
    before = registry_snapshot()
    again = promote()
    assert [d.status for d in again.decisions if d.alias in ("champion", "efficient")] == [P.UNCHANGED] * 2
    assert registry_snapshot() == before
    assert P.promote_all().startswith("mammography-7class: no candidates")
    assert registry_snapshot() == before


def test_dry_run_changes_nothing(capsys):
    first = log_candidate(seg_metrics(0.50), seed=1)
    report = promote(dry_run=True)
    assert decision(report, "champion").status == P.WOULD_MOVE
    assert "DRY RUN" in capsys.readouterr().out
    assert registry_snapshot() == {}  # not even the registered model

    promote()
    assert holder("champion") == version_of(first)
    log_candidate(seg_metrics(0.70), seed=2)
    before = registry_snapshot()
    summary = P.promote_all(dry_run=True)
    assert "pathology-tumor: champion->new version (dry run)" in summary
    assert registry_snapshot() == before


def test_refused_candidates_leave_the_alias_where_it_is(capsys):
    good = log_candidate(seg_metrics(0.50), seed=1)
    promote()
    v_good = holder("champion")
    assert v_good == version_of(good)

    broken = log_candidate(seg_metrics(0.90), seed=2)
    corrupt_model(broken)
    other_data = log_candidate(seg_metrics(0.80), seed=3, digest="digest-2")
    report = promote()
    out = capsys.readouterr().out
    champion = decision(report, "champion")
    assert champion.status == P.UNCHANGED and holder("champion") == v_good
    reasons = dict(champion.refused)
    assert any("smoke: model does not load" in why for why in reasons.values()), reasons
    assert any("dataset_digest digest-2 differs" in why for why in reasons.values()), reasons
    assert "refused run" in out and "smoke: model does not load" in out
    assert version_of(broken) is None and version_of(other_data) is None
    assert_consistent("champion")


def test_a_broken_model_does_not_push_a_working_one_off_the_pareto_front():
    # `broken` dominates `good` (more accurate, smaller, faster) but its model file is
    # garbage: the front is built from working models, so `good` is still the efficient one.
    good = log_candidate(seg_metrics(0.80, size_mb=0.5, latency_ms=5.0), seed=1)
    broken = log_candidate(seg_metrics(0.81, size_mb=0.1, latency_ms=1.0), seed=2)
    corrupt_model(broken)
    report = promote()
    assert holder("champion") == version_of(good)
    efficient = decision(report, "efficient")
    assert efficient.status == P.MOVED and holder("efficient") == version_of(good), efficient
    assert version_of(broken) is None


def test_rollback_restores_the_previous_holder_and_keeps_it(capsys):
    first = log_candidate(seg_metrics(0.50), seed=1)
    promote()
    second = log_candidate(seg_metrics(0.70), seed=2)
    promote()
    v1, v2 = version_of(first), version_of(second)
    assert holder("champion") == v2
    assert MlflowClient().get_model_version(PATHO, v2).tags[P.promotion_key("champion", "previous_version")] == v1

    assert P.main(["--model", PATHO, "--rollback", "champion"]) == 0
    assert holder("champion") == v1
    assert "rolled back" in capsys.readouterr().out
    trail = P.history(PATHO, "champion")
    assert trail[-1]["kind"] == "rollback" and trail[-1]["previous"] == v2
    assert_consistent("champion")
    assert P.rolled_back_key("champion") in MlflowClient().get_model_version(PATHO, v2).tags
    page = MlflowClient().get_registered_model(PATHO).description
    assert f"| rollback | rollback of v{v2} to its previous holder |" in page
    assert f"| champion | [v{v1}](#/models/{PATHO}/versions/{v1}) |" in page
    assert "**champion** (held it; promote" in MlflowClient().get_model_version(PATHO, v2).description
    assert "**champion** (holds it; rollback" in MlflowClient().get_model_version(PATHO, v1).description

    # The next promotion does not undo the rollback: v2 is refused for champion, with the reason.
    report = promote()
    champion = decision(report, "champion")
    assert champion.status == P.UNCHANGED and holder("champion") == v1
    assert any("rolled back from champion" in why for _, why in champion.refused)

    # Nothing before v1: a second rollback is refused as bad input (exit 2, one line).
    assert P.main(["--rollback", PATHO, "champion"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --rollback:") and "no previous holder" in err and err.count("\n") == 1


def test_classification_gate_and_challenger(capsys):
    acc, base = tracking.test_metric("accuracy"), tracking.test_metric("accuracy_minus_baseline")

    def cls_metrics(accuracy: float, majority: float = 0.55) -> dict[str, float]:
        return {acc: accuracy, tracking.test_metric("f1_macro"): accuracy / 2, base: accuracy - majority,
                tracking.baseline_metric("majority_accuracy"): majority, tracking.M_SIZE_MB: 1.0,
                tracking.M_CPU_TOTAL: 1.0, tracking.M_LATENCY_P50: 3.0}

    good = log_candidate(cls_metrics(0.70), study="mammography", task="7class", seed=1)
    majority_only = log_candidate(cls_metrics(0.55), study="mammography", task="7class", seed=2)
    report = promote(MAMMO)
    assert holder("champion", MAMMO) == version_of(good, MAMMO)
    assert any("does not beat its baseline: test_accuracy_minus_baseline 0.0000 <= 0" in why
               for _, why in report.refused_all)
    assert version_of(majority_only, MAMMO) is None
    assert decision(report, "challenger").status == P.NONE  # nothing newer than the champion
    model = mlflow.pyfunc.load_model(f"models:/{MAMMO}@champion")
    probs = model.predict(np.random.default_rng(0).random((2, 1, 8, 8)).astype(np.float32))
    assert probs.shape == (2, 7) and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_any_finished_run_can_be_registered_once(capsys):
    run_id = log_candidate(seg_metrics(0.10), seed=4)  # below its baseline: registered, never promoted
    assert P.main(["--register", run_id]) == 0
    assert P.main(["--register", run_id]) == 0
    versions = MlflowClient().search_model_versions(f"name = '{PATHO}'")
    assert [str(v.version) for v in versions] == ["1"]
    assert f"{PATHO} v1 <- run {run_id}" in capsys.readouterr().out
    mv = versions[0]
    assert float(mv.tags[J]) == pytest.approx(0.10) and mv.tags[tracking.TAG_ARCH] == "tiny"
    assert "promotion" not in " ".join(mv.tags) and holder("champion") is None
    assert "champion:" in MlflowClient().get_registered_model(PATHO).description  # the policy's rules
    MlflowClient().set_tag(run_id, tracking.TAG_CANDIDATE, "false")
    assert P.main(["--register", run_id]) == 2
    assert "logged no full MLflow model" in capsys.readouterr().err


def test_cli_rejects_bad_input(capsys):
    assert P.main(["--model", "no-such-model"]) == 2
    assert "error: --model: no policy for 'no-such-model'" in capsys.readouterr().err
    assert P.main(["--rollback", "champion"]) == 2  # which model?
    assert "error: --rollback: name the model" in capsys.readouterr().err
    assert P.main(["--model", PATHO, "--rollback", "nope"]) == 2
    assert "no alias 'nope'" in capsys.readouterr().err
    # The MLproject command line with its defaults: every policy, nothing to promote.
    assert P.main(["--model", "all", "--dry-run", "false", "--rollback", ""]) == 0
    assert "summary: mammography-7class: no candidates" in capsys.readouterr().out


# --- races -------------------------------------------------------------------------------------------
RACER = """
import os, sys, time
from pathlib import Path
import io
from registry import promote
promote.promote_model(sys.argv[2], dry_run=True, out=io.StringIO())  # imports and model loads: before the line
go = Path(sys.argv[1])
Path(f"{go}.ready.{os.getpid()}").touch()
while not go.exists():
    time.sleep(0.005)
report = promote.promote_model(sys.argv[2])
print("RESULT", report.summary(), flush=True)
"""


def _race(tmp_path, n_others: int) -> P.ModelReport:
    """This process and `n_others` subprocesses promote the same model at the same moment,
    released together once every one has imported and loaded the models."""
    go = tmp_path / "go"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    others = [subprocess.Popen([sys.executable, "-c", RACER, str(go), PATHO], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(n_others)]
    deadline = time.time() + 240
    while len(list(tmp_path.glob("go.ready.*"))) < n_others and time.time() < deadline:
        for other in others:
            assert other.poll() is None, other.communicate()[1][-3000:]
        time.sleep(0.02)
    go.touch()  # all past their imports: go
    mine = promote()
    for other in others:
        out, err = other.communicate(timeout=300)
        assert other.returncode == 0, err[-3000:]
        assert "RESULT" in out
    return mine


def _assert_settled(runs: list[str]) -> None:
    client = MlflowClient()
    by_run = {}
    for mv in client.search_model_versions(f"name = '{PATHO}'"):
        by_run.setdefault(mv.run_id, []).append(mv.version)
    assert all(len(v) == 1 for v in by_run.values()), by_run  # one version per run, race or not
    assert holder("champion") == version_of(runs[1])
    assert_consistent("champion")
    assert_consistent("efficient")
    # The settled state is what one promotion decides: running again changes nothing.
    before = registry_snapshot()
    promote()
    assert registry_snapshot() == before


@pytest.mark.parametrize("lock", [pytest.param("1", marks=pytest.mark.slow), "0"],
                         ids=["file-lock", "verify-after-write-only"])
def test_concurrent_promotions_leave_a_consistent_alias_and_audit(tmp_path, monkeypatch, lock):
    """Two processes promote the same model at the same moment against one sqlite store: a
    subprocess and this test's own process, released together once both have imported.

    With the file lock (the default for local stores) they run one after the other; without
    it (as against a tracking server) they really interleave and verify-after-write repairs.
    """
    runs = [log_candidate(seg_metrics(j, size_mb=s), seed=i)
            for i, (j, s) in enumerate([(0.60, 0.5), (0.65, 0.2), (0.55, 0.05)])]
    promote(dry_run=True)  # this process loads the models once, as the other one does before the line
    monkeypatch.setenv(P.LOCK_ENV, lock)
    mine = _race(tmp_path, 1)
    assert decision(mine, "champion").status in (P.MOVED, P.UNCHANGED)
    _assert_settled(runs)


@pytest.mark.slow  # >20 s: left out of `make test-fast` (CI runs it)
@pytest.mark.postgres
def test_four_concurrent_promotions_on_postgresql(tmp_path, postgres_store):
    """Four processes at once against a PostgreSQL store (no file lock there: every write that
    can race retries, every move is verified after the write)."""
    runs = [log_candidate(seg_metrics(j, size_mb=s), seed=i)
            for i, (j, s) in enumerate([(0.60, 0.5), (0.65, 0.2), (0.55, 0.05)])]
    promote(dry_run=True)
    mine = _race(tmp_path, 3)
    assert decision(mine, "champion").status in (P.MOVED, P.UNCHANGED)
    _assert_settled(runs)


@pytest.mark.slow
@pytest.mark.postgres
def test_an_alias_moved_sixty_times_on_postgresql_keeps_its_whole_history(postgres_store):
    """The audit trail used to be one registered-model tag that overflowed PostgreSQL's
    VARCHAR(5000) within 13 moves; now each move is its own record."""
    first = log_candidate(seg_metrics(0.40), seed=0)
    promote()
    moves = 1
    for i in range(1, 31):  # promote a better one, roll it back: two moves each
        log_candidate(seg_metrics(0.40 + 0.01 * i), seed=i)
        assert decision(promote(), "champion").status == P.MOVED
        assert P.main(["--rollback", PATHO, "champion"]) == 0
        moves += 2
    trail = P.history(PATHO, "champion")
    assert len(trail) == moves == 61
    assert [e["kind"] for e in trail[1:]] == ["promote", "rollback"] * 30
    assert holder("champion") == version_of(first)
    assert_consistent("champion")
    assert all(e["at"] and e["by"] and e["rule"] for e in trail)  # every record readable, none cut short
    # Rollback still works after all that: the next better one moves in, and rolls back.
    log_candidate(seg_metrics(0.95), seed=99)
    promote()
    assert P.main(["--rollback", PATHO, "champion"]) == 0 and holder("champion") == version_of(first)


# --- end to end ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_small_pathology_grid_then_mlflow_run_promote_serves_a_champion_mask(_isolated_store):
    from projects.embedded import ensure_paip
    from projects.pathology.config import PathologyConfig
    from projects.core.grid import run_grid
    from projects.pathology.grid import PathologyGridConfig

    ensure_paip(n_images=8, size=128)
    # 3 epochs at lr 1e-3: after 1 epoch the better cell only just beat the all-tumour
    # predictor (Jaccard 0.075 vs 0.059), too close to count on a champion on every machine;
    # here ELU-Net reaches ~0.27 and the U-Net stays below the baseline (refused, with reason).
    base = PathologyConfig(data="embedded", embedded_images=8, embedded_size=128, tile_size=64, epochs=3,
                           lr=1e-3, cpu_predict_n=4, progress=False)
    with tracking.study_run(get_study("pathology").experiment, "registry-e2e-grid", adopt=False):
        run_grid(get_study("pathology"), PathologyGridConfig(base=base, cells=[("elunet", 4, 3), ("unet", 4, 3)]))

    tracking.ensure_experiment("promotion")  # artifacts under the test's store, not ./mlruns
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("MLFLOW_RUN_ID", None)
    done = subprocess.run([str(Path(sys.executable).parent / "mlflow"), "run", str(REPO), "-e", "promote",
                           "--env-manager", "local", "--experiment-name", "promotion"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "pathology-tumor" in done.stdout and "summary:" in done.stdout
    print(done.stdout)
    assert holder("champion") is not None and holder("efficient") is not None
    assert_consistent("champion")
    assert_consistent("efficient")

    model = mlflow.pyfunc.load_model(f"models:/{PATHO}@champion")
    tiles = np.random.default_rng(0).random((2, 3, 64, 64)).astype(np.float32)
    mask = np.asarray(model.predict(tiles))
    assert mask.shape == (2, 1, 64, 64) and np.isfinite(mask).all() and mask.min() >= 0 and mask.max() <= 1

    # The same promotion again, as the CLI module: nothing moves.
    before = registry_snapshot()
    again = subprocess.run([sys.executable, "-m", "registry.promote"], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert registry_snapshot() == before
