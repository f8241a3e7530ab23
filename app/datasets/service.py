"""Register a dataset by cataloguing its samples (no image decoding), list and browse it.

A dataset's uri must lie inside the configured dataset roots (`core.storage.roots`): anything else is
refused before it is read, with a message that says nothing about what exists there. An s3:// dataset is
copied to this host's cache and catalogued there; the sha256 of its objects is recorded so that every
worker can check the copy it fetches."""

from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from app.datasets.schemas import DatasetCreate, DatasetOut, SampleOut
from app.errors import ProblemError, error_item, invalid
from app.listing import get_or_404, keyset_page
from app.schemas import Page
from core.db.audit import AuditEventType, append_audit_event
from core.db.models import Dataset, Sample, Split, new_id
from core.settings import Settings
from core.storage import s3_options
from core.storage.datasets import source_for_registration
from core.storage.mirror import DatasetUnavailable
from unlearning.catalog import CatalogError, list_samples

INSERT_BATCH = 5000


def to_out(dataset: Dataset) -> DatasetOut:
    return DatasetOut.model_validate(dataset, from_attributes=True)


def register_dataset(
    session: Session, body: DatasetCreate, settings: Settings, *, actor: str | None
) -> Dataset:
    if session.execute(select(Dataset.id).where(Dataset.name == body.name)).first() is not None:
        raise ProblemError(
            409,
            f"a dataset named {body.name!r} already exists",
            slug="conflict",
            errors=[error_item("name", "already taken", value=body.name)],
        )
    try:
        source = source_for_registration(
            body.format,
            body.uri,
            roots=settings.dataset_roots,
            s3=s3_options(settings),
            cache_root=settings.cache_root,
        )
    except CatalogError as error:
        raise invalid(error.field, str(error)) from None
    except DatasetUnavailable as error:
        raise ProblemError(503, str(error), slug="storage-unavailable") from None
    try:
        catalog = list_samples(body.format, source.local, body.options)
    except CatalogError as error:
        raise invalid(error.field, source.public(str(error))) from None
    dataset = Dataset(
        id=new_id("ds"),
        name=body.name,
        format=body.format,
        uri=body.uri,
        content_sha256=source.content_sha256,
        options=body.options,
        num_classes=catalog.num_classes,
        class_names=catalog.class_names,
        split_counts=catalog.split_counts(),
    )
    session.add(dataset)
    session.flush()
    rows = [
        {"dataset_id": dataset.id, "sample_id": s.sample_id, "label": s.label, "split": s.split}
        for s in catalog.samples
    ]
    for start in range(0, len(rows), INSERT_BATCH):
        session.execute(insert(Sample), rows[start : start + INSERT_BATCH])
    append_audit_event(
        session,
        AuditEventType.dataset_registered,
        actor=actor,
        data={
            "dataset_id": dataset.id,
            "name": dataset.name,
            "format": dataset.format,
            "split_counts": dataset.split_counts,
        },
    )
    return dataset


def get_dataset(session: Session, dataset_id: str, *, field: str = "id", where: str = "path") -> Dataset:
    return get_or_404(session, Dataset, dataset_id, "dataset", field=field, where=where)


def list_datasets(session: Session, secret: str, cursor: str | None, limit: int) -> Page[DatasetOut]:
    return keyset_page(
        session,
        select(Dataset),
        [(Dataset.created_at, datetime), (Dataset.id, str)],
        to_out,
        cursor=cursor,
        limit=limit,
        secret=secret,
        resource="datasets",
        filters={},
    )


def list_dataset_samples(
    session: Session, secret: str, dataset_id: str, split: Split | None, cursor: str | None, limit: int
) -> Page[SampleOut]:
    get_dataset(session, dataset_id)
    filters = {"dataset_id": dataset_id, "split": split.value if split else None}
    query = select(Sample).where(Sample.dataset_id == dataset_id)
    if split is not None:
        query = query.where(Sample.split == split.value)
    return keyset_page(
        session,
        query,
        [(Sample.id, int)],
        lambda r: SampleOut(sample_id=r.sample_id, label=r.label, split=r.split),
        cursor=cursor,
        limit=limit,
        secret=secret,
        resource="samples",
        filters=filters,
    )
