"""Live learning-loop figures for the operator dashboard (served by the API)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from lookloop.domain import Decision
from lookloop.loop.calibration import audit_counts
from lookloop.loop.policies import ConformalPolicy, MondrianPolicy
from lookloop.loop.serving import ServingModel
from lookloop.store.tables import AskRow


def loop_figures(serving: ServingModel) -> dict[str, Any]:
    """Curves per model version (labels seen → held-out accuracy, coverage, auto error) and live rates.

    Shape: ``{"serving": id|None, "policy": {...}, "versions": [{id, created_at, labels, accuracy, coverage,
    auto_error, kind}], "gate": the outlier gate or None, "live": {"asks", "answered", "escalated", "coverage"},
    "by_day": [{day, asks,
    answered, coverage}], "audit": {"rate", "asks", "labels", "labels_serving_version", "min_labels"}}``.
    ``policy`` is the live one: audit labels move its threshold, calibration_labels and error_upper_bound.
    """
    registry = serving.registry
    versions = sorted(registry.list(limit=500), key=lambda v: v.created_at)
    policy = serving.policy
    described: dict[str, Any] = (
        dict(policy.describe()) if isinstance(policy, ConformalPolicy | MondrianPolicy)
        else {"policy": policy.name, "threshold": getattr(policy, "threshold", None), "calibration_labels": 0,
              "error_upper_bound": None}
    )
    if isinstance(policy, MondrianPolicy):
        # Per group, in the words the answers use ("no guarantee yet: N audit labels to go").
        described["guarantees"] = {g: v.as_dict() for g, v in serving.guarantees().items()}
    gate = serving.gate
    audit_asks, audit_labels, audit_serving = audit_counts(serving.db, serving.model_version)
    # Coverage has one definition everywhere (``lookloop.metrics``): the share of asks, of every skill, the AI
    # answered without a person.
    with serving.db.session() as s:
        rows = s.execute(
            select(func.date(AskRow.created_at), AskRow.decision, func.count())
            .group_by(func.date(AskRow.created_at), AskRow.decision)
        ).all()
    days: dict[str, dict[str, int]] = {}
    for day, decision, count in rows:
        d = days.setdefault(str(day), {"asks": 0, "answered": 0})
        d["asks"] += int(count)
        if decision == Decision.ANSWER.value:
            d["answered"] += int(count)
    asks = sum(d["asks"] for d in days.values())
    answered = sum(d["answered"] for d in days.values())
    return {
        "serving": registry.current_id(),
        "model_version": serving.model_version,
        "policy": described,
        "gate": gate.describe() if gate is not None else None,
        "versions": [
            {"id": v.id, "created_at": v.created_at.isoformat(), "kind": v.kind, "labels": v.label_count,
             "accuracy": v.metrics.get("accuracy"), "coverage": v.metrics.get("coverage"),
             "auto_error": v.metrics.get("auto_error"), "serving": v.serving}
            for v in versions
        ],
        "live": {"asks": asks, "answered": answered, "escalated": asks - answered,
                 "coverage": answered / asks if asks else None},
        "by_day": [{"day": k, **v, "coverage": v["answered"] / v["asks"] if v["asks"] else None}
                   for k, v in sorted(days.items())],
        "audit": {"rate": serving.settings.audit_rate, "asks": audit_asks, "labels": audit_labels,
                  "labels_serving_version": audit_serving,
                  "min_labels": serving.settings.calibration_min_labels},
    }
