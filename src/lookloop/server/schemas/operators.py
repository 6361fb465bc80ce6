"""The operator API behind the dashboard: metrics over time, confusion, model versions."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, Field

from lookloop.loop.registry import ModelVersion


class PointOut(BaseModel):
    start: dt.datetime
    asks: int
    ai_answered: int
    escalated: int
    coverage: float | None = Field(description="Share of asks the AI answered without a person (the one "
                                   "definition of coverage).")
    escalation_rate: float | None
    labelled: int
    correct: int
    accuracy: float | None = Field(description="Share of labelled asks whose AI guess equals the label.")
    auto_labelled: int
    auto_correct: int
    auto_accuracy: float | None = Field(description="Accuracy over the asks answered without a human.")
    human_answered: int = Field(description="Escalations a person answered with a label.")
    human_rejected: int = Field(description="Escalations a person could not answer (\"can't tell\").")
    human_cancelled: int = Field(description="Escalations the wearer stopped waiting for.")
    human_waiting: int = Field(description="Escalations nobody has settled yet (timed out, still queued).")
    human_resolution_p50_s: float | None = Field(
        description="Median seconds from an escalation until a person settled it (an answer or \"can't tell\"); "
        "unsettled ones count with the time they waited (until cancelled, or until now).")
    human_resolution_p95_s: float | None
    human_answer_p50_s: float | None = Field(description="The same over the escalations a person answered only.")
    human_answer_p95_s: float | None
    labels_spent: int = Field(description="Labels people produced (not imports, not wearer feedback).")
    labels_by_source: dict[str, int]


class ClassStatsOut(BaseModel):
    label: str
    support: int = Field(description="Labelled asks of this class: what the recall rests on.")
    recall: float | None
    precision: float | None
    guessed: int = Field(default=0, description="Labelled asks the AI guessed as this class: what the precision "
                         "rests on.")


class ConfusionOut(BaseModel):
    classes: list[str] = Field(description="Row and column order; rare classes fold into '(other)'.")
    matrix: list[list[int]] = Field(description="matrix[label][ai_guess] counts.")
    per_class: list[ClassStatsOut]
    total: int


class GroupOut(BaseModel):
    group: str = Field(description="The family of the predicted item (Fruit, Vegetables, Packages, other), or "
                       "'unknown': asks the outlier gate found unlike anything learnt.")
    asks: int = Field(description="Identify asks decided in this group in the window.")
    answered: int
    escalated: int
    coverage: float | None = Field(description="Share of the group's asks answered without a person.")
    escalation_rate: float | None
    audit_answered: int = Field(description="Labelled audit asks (random spot checks) the AI answered: what the "
                                "error rests on.")
    audit_wrong: int
    error: float | None = Field(description="Auto-answer error measured on audit labels.")
    bound: float | None = Field(description="The certified auto-answer error bound of the serving policy in this "
                                "group; null: no guarantee yet.")
    calibration_labels: int = Field(default=0, description="Labels of the group the policy is calibrated on "
                                    "(cross-fitted labelled photos and audit labels): what the bound rests on.")
    labels_to_go: int | None = Field(description="Audit labels still needed before a certificate can exist (at "
                                     "least this many, if every one is a right answer); 0: it has one.")
    guarantee: str = Field(description="The same in words, e.g. 'no guarantee yet: 12 audit labels to go'.")


class MetricsOut(BaseModel):
    since: dt.datetime
    until: dt.datetime
    bucket: str
    points: list[PointOut]
    totals: PointOut
    confusion: ConfusionOut
    groups: list[GroupOut] = Field(default_factory=list, description="Per group, over identify asks.")


class ModelVersionOut(BaseModel):
    version: str
    serving: bool = False
    created_at: str | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    info: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def of(cls, version: ModelVersion, serving: str) -> ModelVersionOut:
        raw = version.as_dict()
        info = {k: v for k, v in raw.items() if k not in ("id", "created_at", "metrics", "serving")
                and isinstance(v, str | int | float | bool | None)}
        return cls(
            version=version.id,
            serving=version.serving or version.id == serving,
            created_at=version.created_at.isoformat(),
            metrics=dict(version.metrics or {}),
            info=info,
        )


class ModelsOut(BaseModel):
    serving: str
    registry: bool = Field(description="Whether a model registry is installed (versions are listed from it).")
    actions: bool = Field(description="Whether promote and rollback are available here.")
    versions: list[ModelVersionOut]
    rollback_to: str | None = Field(
        default=None, description="The version a rollback would serve again; null when there is none.")
    done: str | None = Field(default=None, description="What a promotion or rollback just did, in words.")

    @classmethod
    def of(cls, serving: str, versions: list[ModelVersion], *, rollback_to: str | None = None,
           done: str | None = None) -> ModelsOut:
        """The registered versions; the serving one first as 'not registered' when the registry lacks it."""
        entries = [ModelVersionOut.of(v, serving) for v in versions]
        if not any(v.serving for v in entries):
            entries.insert(0, ModelVersionOut(
                version=serving, serving=True,
                info={"note": "the start-up model (not registered until the first promotion keeps it)"}))
        return cls(serving=serving, registry=True, actions=True, versions=entries, rollback_to=rollback_to,
                   done=done)


class OperatorSummaryOut(BaseModel):
    metrics: MetricsOut
    reviewers: list[dict[str, Any]]
    queue: dict[str, int]
    models: ModelsOut


class JobOut(BaseModel):
    """A background job as operators see it (``lookloop jobs list`` shows the same)."""

    id: str
    task: str = Field(description="privacy.redact, privacy.purge, models.train, exports.write …")
    args: dict[str, Any]
    key: str | None = Field(description="Jobs with one key are one piece of work (queued once at a time).")
    state: str = Field(description="queued, running, retrying, succeeded or failed")
    progress: float = Field(description="0..1, as the job reported it")
    detail: str = Field(description="What the job is doing now")
    attempts: int
    max_attempts: int
    error: str = Field(description="The last attempt's error (a retried job keeps it until it succeeds)")
    result: dict[str, Any]
    worker: str = Field(description="host:pid of the process that ran the last attempt")
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None


class ExportIn(BaseModel):
    """An export to write in the background (``lookloop export`` has the same options)."""

    format: Literal["jsonl", "hf", "kto", "imagefolder"]
    name: str | None = Field(default=None, max_length=100, description="A plain file name in the server's "
                             "exports folder; default the format and the time.")
    since: str | None = Field(default=None, max_length=40, description="Only asks from this time: a date, an ISO "
                              "time, or a span back such as 7d.")
    until: str | None = Field(default=None, max_length=40, description="Only asks before this time.")
    labelled_only: bool = Field(default=False, description="jsonl, hf: only asks that have a label.")
    frames: bool = Field(default=False, description="jsonl, kto: also write the frames beside the file.")
    skill: str = Field(default="identify", max_length=64, description="imagefolder: which skill's frames.")
    imports: bool = Field(default=False, description="imagefolder: add the imported labelled photos.")
    force: bool = Field(default=False, description="Replace an export of that name.")


class ExportQueuedOut(BaseModel):
    job_id: str = Field(description="Follow it at /v1/operators/jobs/{job_id} (or `lookloop jobs show`).")
    path: str = Field(description="Where the export is written, on the server's shared storage.")
    job: JobOut
