"""What the MLflow UI's registry pages say, rewritten after every promotion and rollback.

- The registered model's description: its policy, who holds each alias now, and each
  alias's latest moves as a markdown table (not the raw tags), with a link to the full
  history (the `registry-audit` experiment's runs table, one run per move).
- A version's description: what it was trained on and scored (registry.store.describe_run)
  and, for each alias it holds or held, a table of the gates it passed and the rule that
  put it there.

Links are relative (`#/...`): they open inside whichever UI shows the page. MLflow keeps
descriptions in VARCHAR(5000) columns (enforced by PostgreSQL), so each is cut to fit.
"""
from __future__ import annotations

from mlflow.tracking import MlflowClient

from projects.core import tracking
from registry import audit, card, store
from registry import gates as G
from registry.policy import Policy

MAX_DESCRIPTION = 4800  # MLflow's description columns hold 5000; room for multi-byte text
HISTORY_ROWS = 8


def refresh(client: MlflowClient, name: str, policy: Policy, versions: set[str] = frozenset()) -> None:
    """Rewrite the model's description and those of `versions` and of every alias holder."""
    if store.registered_model(client, name) is None:
        return
    holders = {rule.alias: store.alias_holder(client, name, rule.alias) for rule in policy.aliases}
    store.retry_conflicts(client.update_registered_model, name, description=model_description(client, name, policy,
                                                                                               holders))
    for version in sorted({v for v in holders.values() if v} | {v for v in versions if v}, key=int):
        store.retry_conflicts(client.update_model_version, name, version,
                              description=version_description(client, name, version, policy))


def model_description(client: MlflowClient, name: str, policy: Policy, holders: dict[str, str | None]) -> str:
    audit_ui = tracking.ui_experiment_url(audit.experiment_id(client), tracking.IN_UI)
    lines = [policy.description.strip(), "",
             f"Aliases are moved only by `python -m registry.promote` (MLproject entry point `promote`) "
             f"following `registry/policies/{policy.path.name}`:", ""]
    lines += [f"- **{r.alias}**: {r.describe()}" for r in policy.aliases]
    lines += ["", "| alias | holder |", "|---|---|"]
    for alias, version in holders.items():
        held = f"[{store.vlabel(version)}]({tracking.ui_model_url(name, tracking.IN_UI, version)})" if version else "-"
        lines.append(f"| {alias} | {held} |")
    for alias in holders:
        lines += ["", f"**{alias}: latest moves** (newest first)", "",
                  audit.history_markdown(name, alias, client, last=HISTORY_ROWS)]
    lines += ["", f"Every move, with the decision behind it: [the registry-audit runs]({audit_ui}) "
                  f"(filter `tags.audit.model = '{name}'`)."]
    return _fit("\n".join(lines))


def version_description(client: MlflowClient, name: str, version: str, policy: Policy) -> str:
    mv = client.get_model_version(name, version)
    run = client.get_run(mv.run_id)
    lines = [card.model_card(client, name, version, run), "",
             store.describe_run(run),
             f"[The training run]({tracking.ui_run_url(run.info.experiment_id, run.info.run_id, tracking.IN_UI)})."]
    tags = dict(mv.tags)
    for rule in policy.aliases:
        key = lambda field, a=rule.alias: tags.get(audit.promotion_key(a, field), "")  # noqa: E731
        if not key("at"):
            continue
        holds = store.alias_holder(client, name, rule.alias) == str(version)
        lines += ["", f"**{rule.alias}** ({'holds it' if holds else 'held it'}; {key('kind')} {key('at')[:19]} UTC, "
                      f"after {store.vlabel(key('previous_version') or None)}): {key('rule')}", "",
                  "| gate | result |", "|---|---|"]
        lines += [f"| {gate} | {result} |" for gate, result in gate_rows(key("gates"))]
        if key("value"):
            lines.append(f"| {key('metric') or 'metric'} | {key('value')} |")
        if key("compared"):
            lines.append(f"| compared | {_cell(key('compared'))} |")
        if key("significance"):
            lines.append(f"| significance | {_cell(key('significance'))} |")
    return _fit("\n".join(lines))


def gate_rows(text: str) -> list[tuple[str, str]]:
    """The version's gate record (registry.gates.passed_text) as (gate, result) rows, in the
    order the gates ran; a record in no known form is one row as it is."""
    record = G.read_passed(text)
    if not record.gates:
        return [("gates", _cell(text))] if text else []
    return [(gate, "passed" + (f" ({note})" if note else "")) for gate, note in record.gates]


def _cell(text: str) -> str:
    return text.replace("|", "/").replace("\n", " ")[:300]


def _fit(text: str) -> str:
    return text if len(text) <= MAX_DESCRIPTION else text[:MAX_DESCRIPTION - 30] + "\n\n(cut to fit MLflow's limit)"
