"""Validating and storing new deletion requests in bulk: one request (POST) or up to a thousand (batch)
go through the same checks, with a cost that grows with the ids posted, not with what is pending.

Validation order (DESIGN 6.1) per item: cheap checks (exactly one of sample_ids and class, the id cap,
method, params), then the model (exists, ready), then the ids (duplicates, unknown, not train, already
forgotten, pending in an active request) or the class (known, not pending, something left to forget).
The database answers for all the items of a model at once:

- one statement per model locks the model rows (`FOR KEY SHARE`, which concurrent sample requests share;
  `FOR UPDATE` when a class is posted, so a class and a sample of that class never both get in);
- one statement per model and 5,000 ids looks up each posted id's split and label, its tombstone and the
  active request that holds it (`pending_items`, primary key (model, kind, item)), plus the model's
  pending classes.

Accepted items are stored through `core.lifecycle.requests_received` with their `pending_items` rows,
inserted in key order (two writers never wait on each other in opposite orders). A concurrent request that
took the same ids first makes that insert fail (IntegrityError): the caller rolls back and checks again,
and the ids are then reported as pending.
"""

from __future__ import annotations

import calendar
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Integer, String, any_, bindparam, exists, literal, null, select, union_all
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from app.deletion.schemas import DeletionRequestCreate
from app.errors import ErrorItem, ProblemError, error_item, invalid, problem_from_validation
from core import lifecycle
from core.db.audit import canonical_json, defer_audit
from core.db.bulk import insert_rows
from core.db.models import (
    PENDING_CLASS,
    PENDING_SAMPLE,
    Dataset,
    ForgottenSample,
    Model,
    ModelStatus,
    PendingItem,
    RequestKind,
    Sample,
    Split,
    new_id,
    utcnow,
)
from core.request_params import ServiceParamError, split_reference
from core.settings import Settings
from unlearning.catalog import METHOD_NAMES, method_config

LOOKUP_CHUNK = 5000
MAX_LISTED = 100


def add_one_month(moment: datetime) -> datetime:
    """The same day and time next month, clamped to the month's last day (31 Jan -> 28/29 Feb)."""
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def body_hash(body: DeletionRequestCreate) -> str:
    """sha256 of the canonical JSON of the body with defaults filled in (key order and spacing ignored)."""
    return hashlib.sha256(canonical_json(body.model_dump(mode="json", by_alias=True)).encode()).hexdigest()


@dataclass(frozen=True)
class ModelRow:
    id: str
    status: str
    head_version_id: str | None
    dataset_id: str
    num_classes: int
    class_names: list[Any]


@dataclass(frozen=True)
class SampleFacts:
    split: str
    label: int
    forgotten_by: str | None
    pending_in: str | None


@dataclass
class Accepted:
    """An item that passed every check: what to store."""

    body: DeletionRequestCreate
    kind: RequestKind
    forget_class: int | None
    pending: list[tuple[str, str]]
    """(kind, item) keys of pending_items."""
    request: lifecycle.NewRequest | None = None
    """Its row, once stored (`store_accepted`)."""
    idempotency_key: str | None = None
    actor: str | None = None
    request_hash: str | None = None
    """`body_hash(body)` when the caller already took it (the idempotency check)."""


Outcome = Accepted | ProblemError


# -- cheap checks -------------------------------------------------------------------------------------


def check_shape(settings: Settings, body: DeletionRequestCreate, configs: dict[tuple[str, str], Any]) -> None:
    """Exactly one of sample_ids and class, the id cap, a known method and valid params. `configs` keeps
    each (method, params) validated once per call (a backlog's thousand items mostly share theirs)."""
    if (body.sample_ids is None) == (body.class_ is None):
        name = "sample_ids" if body.sample_ids is not None else "class"
        raise invalid(name, "give exactly one of sample_ids and class")
    if body.sample_ids is not None:
        if len(body.sample_ids) > settings.max_sample_ids:
            raise ProblemError(
                413,
                f"{len(body.sample_ids)} sample ids exceed the limit of {settings.max_sample_ids}",
                slug="too-many-sample-ids",
                errors=[
                    error_item(
                        "sample_ids", f"more than {settings.max_sample_ids} ids", value=len(body.sample_ids)
                    )
                ],
            )
        if not body.sample_ids:
            raise invalid("sample_ids", "must name at least one sample id", value=[])
    if body.method not in METHOD_NAMES:
        raise invalid(
            "method", f"unknown method {body.method!r}; known: {list(METHOD_NAMES)}", value=body.method
        )
    key = (body.method, repr(body.params))  # JSON values: equal reprs, equal params
    config = configs.get(key)
    if config is None:
        config = configs[key] = _method_config(body)
    if body.sample_ids is not None:  # what the method can never serve is refused now, not failed later
        reason = config.unservable_reason(forget_count=len(body.sample_ids), class_wise=False)
        if reason is not None:
            raise invalid("sample_ids", reason, value=len(body.sample_ids))


def _method_config(body: DeletionRequestCreate) -> Any:
    try:
        _, params = split_reference(body.params)
    except ServiceParamError as error:
        raise invalid(error.field, error.message, value=error.value) from None
    try:
        return method_config(body.method).model_validate(params)
    except ValidationError as error:
        raise problem_from_validation(error, prefix="params", title="Invalid method params") from None


def _duplicates(sample_ids: list[str]) -> ProblemError | None:
    seen: set[str] = set()
    duplicates = [s for s in sample_ids if s in seen or seen.add(s)]  # type: ignore[func-returns-value]
    if not duplicates:
        return None
    items = [error_item("sample_ids", "duplicate sample id", value=s) for s in dict.fromkeys(duplicates)]
    return _ids_problem(f"{len(set(duplicates))} sample ids appear more than once", items, len(items))


def _held_by(holder: str) -> str:
    """`holder` is a request id, or "item N of this batch" (an earlier item of the same call)."""
    return (
        f"requested by {holder} too" if holder.startswith("item ") else f"pending in active request {holder}"
    )


def _ids_problem(detail: str, items: list[ErrorItem], total: int) -> ProblemError:
    listed = f" (first {MAX_LISTED} listed in errors)" if total > MAX_LISTED else ""
    return ProblemError(
        422, detail + listed, slug="invalid-sample-ids", title="Invalid sample ids", errors=items[:MAX_LISTED]
    )


# -- database lookups ---------------------------------------------------------------------------------


def load_models(session: Session, model_ids: Iterable[str], *, exclusive: bool) -> dict[str, ModelRow]:
    """The models (with their dataset's classes), locked in id order: shared with other sample requests
    (`FOR KEY SHARE`), or `exclusive` (`FOR UPDATE`) when a class is posted."""
    ids = sorted(set(model_ids))
    if not ids:
        return {}
    m, d = Model.__table__, Dataset.__table__
    query = (
        select(m.c.id, m.c.status, m.c.head_version_id, m.c.dataset_id, d.c.num_classes, d.c.class_names)
        .join_from(m, d, m.c.dataset_id == d.c.id)
        .where(m.c.id.in_(ids))
        .order_by(m.c.id)
        .with_for_update(of=m, read=not exclusive, key_share=not exclusive)
    )
    return {row.id: ModelRow(*row) for row in session.connection().execute(query)}


def model_problem(model_id: str, model: ModelRow | None) -> ProblemError | None:
    if model is None:
        return invalid("model_id", f"model {model_id!r} does not exist", value=model_id)
    if model.status != ModelStatus.ready or model.head_version_id is None:
        return ProblemError(
            409,
            f"model {model_id} is {model.status}, not ready: it cannot take deletion requests yet",
            slug="model-not-ready",
            errors=[error_item("model_id", f"model is {model.status}", value=model_id)],
        )
    return None


def lookup_samples(
    session: Session, model: ModelRow, sample_ids: Sequence[str]
) -> tuple[dict[str, SampleFacts], dict[int, str]]:
    """Each known id's split, label, tombstone and pending request; and the model's pending classes."""
    s, f, p = Sample.__table__, ForgottenSample.__table__, PendingItem.__table__
    facts: dict[str, SampleFacts] = {}
    classes: dict[int, str] = {}
    unique = list(dict.fromkeys(sample_ids))
    for start in range(0, max(len(unique), 1), LOOKUP_CHUNK):
        chunk = unique[start : start + LOOKUP_CHUNK]
        # Correlated lookups: each is an index probe per posted id, whatever the planner knows.
        forgotten_by = (
            select(f.c.request_id)
            .where(f.c.model_id == model.id, f.c.sample_id == s.c.sample_id)
            .scalar_subquery()
        )
        pending_in = (
            select(p.c.request_id)
            .where(p.c.model_id == model.id, p.c.kind == PENDING_SAMPLE, p.c.item == s.c.sample_id)
            .scalar_subquery()
        )
        samples = select(
            literal(PENDING_SAMPLE).label("kind"),
            s.c.sample_id.label("item"),
            s.c.split,
            s.c.label,
            forgotten_by.label("forgotten_by"),
            pending_in.label("pending_in"),
        ).where(s.c.dataset_id == model.dataset_id, _one_of(session, s.c.sample_id, chunk))
        query: Any = samples
        if start == 0:
            pending_classes = select(
                literal(PENDING_CLASS),
                p.c.item,
                null().cast(String),
                null().cast(Integer),
                null().cast(String),
                p.c.request_id,
            ).where(p.c.model_id == model.id, p.c.kind == PENDING_CLASS)
            query = union_all(samples, pending_classes)
        for kind, item, split, label, forgotten_by, pending_in in session.connection().execute(query):
            if kind == PENDING_CLASS:
                classes[int(item)] = pending_in
            else:
                facts[item] = SampleFacts(split, label, forgotten_by, pending_in)
    return facts, classes


def _one_of(session: Session, column: Any, values: Sequence[str]) -> Any:
    """`column = ANY(:array)` on PostgreSQL: one statement text whatever the number of values (compiled and
    prepared once, where an IN list is a new statement for each length); `IN (...)` elsewhere."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam("values", list(values), type_=ARRAY(String)))
    return column.in_(values)


def _class_left_to_forget(session: Session, model: ModelRow, forget_class: int) -> tuple[bool, bool]:
    """(the class has train samples, one of them is not forgotten yet)."""
    s, f = Sample.__table__, ForgottenSample.__table__
    train = select(s.c.id).where(
        s.c.dataset_id == model.dataset_id, s.c.split == Split.train.value, s.c.label == forget_class
    )
    left = train.where(~exists().where(f.c.model_id == model.id, f.c.sample_id == s.c.sample_id))
    has_train, has_left = session.execute(select(exists(train), exists(left))).one()
    return bool(has_train), bool(has_left)


# -- per-item checks ----------------------------------------------------------------------------------


@dataclass
class ModelClaims:
    """What the items of one model hold so far: from the database and from items accepted earlier in the
    same call (a batch's second item cannot take an id its first took)."""

    model: ModelRow
    facts: dict[str, SampleFacts] = field(default_factory=dict)
    classes: dict[int, str] = field(default_factory=dict)
    claimed: dict[str, str] = field(default_factory=dict)
    """sample id -> "item N" of this call."""
    claimed_classes: dict[int, str] = field(default_factory=dict)


def check_samples(claims: ModelClaims, sample_ids: list[str], owner: str) -> Accepted | ProblemError:
    model, facts = claims.model, claims.facts
    unknown = [sid for sid in sample_ids if sid not in facts]
    not_train = [sid for sid in sample_ids if sid in facts and facts[sid].split != Split.train]
    problems = [
        error_item("sample_ids", "unknown sample id in the model's dataset", value=s) for s in unknown
    ]
    problems += [
        error_item(
            "sample_ids",
            f"in the {facts[s].split} split, not train: only training members can be forgotten",
            value=s,
        )
        for s in not_train
    ]
    if problems:
        return _ids_problem(
            f"{len(unknown)} unknown sample ids and {len(not_train)} not in the train split of dataset "
            f"{model.dataset_id}",
            problems,
            len(problems),
        )
    forgotten = {sid: facts[sid].forgotten_by for sid in sample_ids if facts[sid].forgotten_by}
    pending: dict[str, str] = {}
    for sid in sample_ids:
        holder = (
            facts[sid].pending_in
            or claims.claimed.get(sid)
            or claims.classes.get(facts[sid].label)
            or claims.claimed_classes.get(facts[sid].label)
        )
        if holder is not None and sid not in forgotten:
            pending[sid] = holder
    if forgotten or pending:
        problems = [
            error_item("sample_ids", f"already forgotten (request {forgotten[s]})", value=s)
            for s in sample_ids
            if s in forgotten
        ] + [error_item("sample_ids", _held_by(pending[s]), value=s) for s in sample_ids if s in pending]
        return _ids_problem(
            f"{len(forgotten)} sample ids are already forgotten by model {model.id} and "
            f"{len(pending)} are pending in another active request",
            problems,
            len(problems),
        )
    claims.claimed.update(dict.fromkeys(sample_ids, owner))
    return Accepted(
        body=None,  # type: ignore[arg-type]  # set by the caller
        kind=RequestKind.samples,
        forget_class=None,
        pending=[(PENDING_SAMPLE, sid) for sid in sample_ids],
    )


def check_class(
    session: Session, claims: ModelClaims, value: int | str, owner: str
) -> Accepted | ProblemError:
    model = claims.model
    if isinstance(value, str):
        if value not in model.class_names:
            return invalid(
                "class", f"unknown class name {value!r}; known: {model.class_names[:50]}", value=value
            )
        forget_class = model.class_names.index(value)
    else:
        if not 0 <= value < model.num_classes:
            return invalid("class", f"class {value} is out of range 0..{model.num_classes - 1}", value=value)
        forget_class = value
    holder = claims.classes.get(forget_class) or claims.claimed_classes.get(forget_class)
    if holder is not None:
        return invalid("class", f"class {forget_class} is {_held_by(holder)}", value=value)
    has_train, has_left = _class_left_to_forget(session, model, forget_class)
    if not has_train:
        return invalid(
            "class", f"class {forget_class} has no train samples in dataset {model.dataset_id}", value=value
        )
    if not has_left:
        return invalid(
            "class", f"every train sample of class {forget_class} is already forgotten", value=value
        )
    claims.claimed_classes[forget_class] = owner
    return Accepted(
        body=None,  # type: ignore[arg-type]
        kind=RequestKind.class_,
        forget_class=forget_class,
        pending=[(PENDING_CLASS, str(forget_class))],
    )


def check_items(
    session: Session, settings: Settings, bodies: Sequence[DeletionRequestCreate | ProblemError]
) -> list[Outcome]:
    """Every item's outcome, in order; an item given as a ProblemError (it did not parse) stays one.
    Locks the models involved for the rest of the transaction."""
    outcomes: list[Outcome | None] = []
    live: list[tuple[int, DeletionRequestCreate]] = []
    configs: dict[tuple[str, str], Any] = {}
    for index, body in enumerate(bodies):
        if isinstance(body, ProblemError):
            outcomes.append(body)
            continue
        try:
            check_shape(settings, body, configs)
        except ProblemError as problem:
            outcomes.append(problem)
            continue
        outcomes.append(None)
        live.append((index, body))
    models = load_models(
        session, (body.model_id for _, body in live), exclusive=any(b.class_ is not None for _, b in live)
    )
    by_model: dict[str, ModelClaims] = {}
    for index, body in list(live):
        problem = model_problem(body.model_id, models.get(body.model_id))
        if problem is None and body.sample_ids is not None:
            problem = _duplicates(body.sample_ids)
        if problem is not None:
            outcomes[index] = problem
            live.remove((index, body))
            continue
        by_model.setdefault(body.model_id, ModelClaims(models[body.model_id]))
    for model_id, claims in by_model.items():
        ids = [sid for _, body in live if body.model_id == model_id for sid in body.sample_ids or []]
        claims.facts, claims.classes = lookup_samples(session, claims.model, ids)
    for index, body in live:
        claims = by_model[body.model_id]
        owner = f"item {index} of this batch"
        if body.sample_ids is not None:
            outcome = check_samples(claims, body.sample_ids, owner)
        else:
            assert body.class_ is not None
            outcome = check_class(session, claims, body.class_, owner)
        if isinstance(outcome, Accepted):
            outcome.body = body
        outcomes[index] = outcome
    return [outcome for outcome in outcomes if outcome is not None]


# -- storing ------------------------------------------------------------------------------------------


def store_accepted(session: Session, accepted: Sequence[Accepted]) -> None:
    """Store the accepted items as queued requests (`core.lifecycle.requests_received`, one bulk insert;
    their audit events are chained when the caller commits) and the pending rows of all of them, in key
    order. Each item's `request` is then its complete row. The caller commits."""
    defer_audit(session)
    now = utcnow()
    due_at = add_one_month(now)
    requests: list[lifecycle.NewRequest] = []
    rows: list[dict[str, str]] = []
    for item in accepted:
        body = item.body
        item.request = {
            "id": new_id("req"),
            **body.model_dump(mode="json", exclude={"class_"}),  # each body field is the column of its name
            "kind": item.kind,
            "forget_class": item.forget_class,
            "due_at": due_at,
            "idempotency_key": item.idempotency_key,
            "request_hash": item.request_hash or body_hash(body),
            "api_key_id": item.actor,
        }
        requests.append(item.request)
        rows += [
            {"model_id": body.model_id, "kind": kind, "item": key, "request_id": item.request["id"]}
            for kind, key in item.pending
        ]
    lifecycle.requests_received(session, requests, received_at=now)
    rows.sort(key=lambda row: (row["model_id"], row["kind"], row["item"]))
    insert_rows(session.connection(), PendingItem.__table__, rows)
