from fastapi import APIRouter, Query, Response

from app.api.deps import SessionDep, SettingsDep, page_limit
from app.auth import ModelsRead, ModelsWrite
from app.datasets import service
from app.datasets.schemas import DatasetCreate, DatasetOut, SampleOut
from app.schemas import Cursor, Limit, Page
from core.db.models import Split

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])


@router.post("", status_code=201, response_model=DatasetOut)
def create_dataset(
    body: DatasetCreate,
    session: SessionDep,
    settings: SettingsDep,
    principal: ModelsWrite,
    response: Response,
) -> DatasetOut:
    """Register a dataset and bulk-load its sample table (ids, labels, splits). Its uri must lie inside the
    service's dataset roots (a local folder or an s3:// prefix; `UNLEARN_DATASET_ROOTS`)."""
    dataset = service.register_dataset(session, body, settings, actor=principal.key_id)
    session.commit()
    response.headers["Location"] = f"/v1/datasets/{dataset.id}"
    return service.to_out(dataset)


@router.get("", response_model=Page[DatasetOut])
def list_datasets(
    session: SessionDep, settings: SettingsDep, _: ModelsRead, cursor: Cursor = None, limit: Limit = None
) -> Page[DatasetOut]:
    return service.list_datasets(session, settings.server_secret, cursor, page_limit(settings, limit))


@router.get("/{dataset_id}", response_model=DatasetOut)
def get_dataset(dataset_id: str, session: SessionDep, _: ModelsRead) -> DatasetOut:
    return service.to_out(service.get_dataset(session, dataset_id))


@router.get("/{dataset_id}/samples", response_model=Page[SampleOut])
def list_samples(
    dataset_id: str,
    session: SessionDep,
    settings: SettingsDep,
    _: ModelsRead,
    split: Split | None = Query(default=None),
    cursor: Cursor = None,
    limit: Limit = None,
) -> Page[SampleOut]:
    return service.list_dataset_samples(
        session, settings.server_secret, dataset_id, split, cursor, page_limit(settings, limit)
    )
