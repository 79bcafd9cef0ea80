"""The API's request bodies and documented response shapes. Responses are built by the same builders as
the CLI's ``--json`` (:mod:`orchestrator.reports`, :func:`coordinator.status`); these models only
describe them in ``/openapi.json``, and the schema tests hold the two together."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..models import Command, Selector

Id = Field(min_length=1, max_length=63)
Timeout = Field(default=None, ge=0, le=86_400)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Selectors(Strict):
    """Which tenants: the CLI's ``--tenant``, ``--tag``, ``--group``, ``--exclude``."""

    tenants: list[str] | None = None
    tags: list[str] | None = None
    group: str | list[str] | None = Field(default=None, description="One group (a list of one is accepted).")
    exclude: list[str] | None = None

    def selector(self) -> Selector:
        group = self.group
        if isinstance(group, list):
            if len(group) > 1:
                from ..exceptions import UserError

                raise UserError("group: one group at a time")
            group = group[0] if group else None
        return Selector(
            tenants=tuple(self.tenants or ()),
            tags=tuple(self.tags or ()),
            group=group,
            exclude=tuple(self.exclude or ()),
        )


class RolloutRequest(Selectors):
    """``POST /api/v1/rollouts``: a CLI rollout command and its options, under their long names."""

    command: Command
    revision: str = Field(
        min_length=1, max_length=255, description="Any spec the CLI takes: head, +1, an id."
    )
    parallel: int | None = Field(default=None, ge=1, le=512)
    canary: int = Field(default=0, ge=0, le=1_000_000)
    canary_tag: str | None = Field(default=None, max_length=63)
    batch_size: int = Field(default=0, ge=0, le=1_000_000)
    max_failures: int | None = Field(default=None, ge=1, le=1_000_000)
    max_failure_rate: str | float | None = Field(default=None, description="5% or 0.05.")
    lock_timeout: float | None = Timeout
    statement_timeout: float | None = Timeout
    task_timeout: float | None = Timeout
    dry_run: bool = False
    confirm_count: int | None = Field(
        default=None, ge=0, description="The selection's size: needed above TENANTCTL_API_MAX_SELECTION."
    )


class Overrides(Selectors):
    """``retry``/``resume``: change the rollout's own options for the new attempts."""

    parallel: int | None = Field(default=None, ge=1, le=512)
    lock_timeout: float | None = Timeout
    statement_timeout: float | None = Timeout
    task_timeout: float | None = Timeout


class TenantIn(Strict):
    id: str = Id
    url: str = Field(min_length=1, max_length=4096, description="A password in it is encrypted at rest.")
    schema_: str | None = Field(default=None, alias="schema", max_length=63)
    tags: list[str] = Field(default_factory=list)
    group: str | None = Field(default=None, max_length=63)
    enabled: bool = True

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class TenantPatch(Strict):
    url: str | None = Field(default=None, min_length=1, max_length=4096)
    schema_: str | None = Field(default=None, alias="schema", max_length=63)
    tags: list[str] | None = None
    group: str | None = Field(default=None, max_length=63)
    enabled: bool | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class AuditRequest(Selectors):
    kind: Literal["revision", "schema"] = "revision"


# -- documented responses -----------------------------------------------------------------------------
class TenantOut(BaseModel):
    id: str
    url: str
    schema_: str | None = Field(alias="schema")
    tags: list[str]
    group: str | None
    enabled: bool


class TenantPage(BaseModel):
    items: list[TenantOut]
    total: int
    limit: int
    offset: int


class Imported(BaseModel):
    created: int
    updated: int
    unchanged: int


class TenantRow(BaseModel):
    """One tenant of a rollout: ``status --json``'s ``tenants`` items."""

    tenant: str
    status: str
    attempt: int
    wave: int
    retries: int
    from_revision: str | None
    to_revision: str | None
    applied: list[str]
    duration_ms: int | None
    worker: str | None
    error_class: str | None
    error: str | None
    note: str | None
    blocked_by: int | None
    traceback: str | None = None


class RolloutSummary(BaseModel):
    """One rollout of ``tenantctl rollouts --json``."""

    id: int
    command: str
    target: str
    state: str
    created_by: str
    created_at: str
    finished_at: str | None
    halt_reason: str | None
    counts: dict[str, int]


class RolloutReport(RolloutSummary):
    """``tenantctl status ID --json``, exactly: the summary's fields and the rollout's tenants."""

    selection: dict[str, Any]
    policy: dict[str, Any]
    tenants: list[TenantRow]
    page: dict[str, int] | None = Field(default=None, description="Only when ?limit= pages the tenants.")


class RolloutPage(BaseModel):
    items: list[RolloutSummary]
    total: int
    limit: int
    offset: int


class PlanOut(BaseModel):
    """``--dry-run --json``."""

    command: str
    target: str
    refused: str | None
    groups: list[dict[str, Any]]
    tenants: list[dict[str, Any]]


class TenantRunOut(BaseModel):
    rollout_id: int
    run_id: int
    attempt: int
    status: str
    from_revision: str | None
    to_revision: str | None
    applied: list[str]
    started_at: str | None
    finished_at: str | None
    duration_ms: int | None
    worker: str | None
    error_class: str | None
    error: str | None
    traceback: str | None


class AuditSummary(BaseModel):
    id: int
    kind: str
    created_at: str
    created_by: str
    head: str
    counts: dict[str, int]
    drift: int


class AuditPage(BaseModel):
    items: list[AuditSummary]
    total: int
    limit: int
    offset: int
