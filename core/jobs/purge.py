"""Purging retired versions' checkpoints once their grace period is over.

The object goes first (deleted through the artifact store, wherever it is), then the row is marked purged
with its audit event: a process killed in between
leaves a row whose file is already gone, and the next pass (the job loop after each success, the reaper
on every pass) marks it. A retired version is never served in the meantime, whatever its file's state.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

from sqlalchemy import select

from core import lifecycle
from core.db import AuditEventType, ModelVersion, append_audit_event, session_scope
from core.storage import ArtifactStore
from unlearning.data.cache import purge_derived

log = logging.getLogger(__name__)


def purge_due_checkpoints(database_url: str, store: ArtifactStore, now: datetime, *, actor: str) -> list[str]:
    """Delete the checkpoint of every retired version whose purge is due; returns their ids."""
    with session_scope(database_url, readonly=True) as session:
        due = session.execute(
            select(ModelVersion.id, ModelVersion.checkpoint_uri).where(
                ModelVersion.purge_after <= now, ModelVersion.purged_at.is_(None)
            )
        ).all()
    purged: list[str] = []
    for version_id, checkpoint_uri in due:
        store.delete(checkpoint_uri)
        with session_scope(database_url) as session:
            version = session.get(ModelVersion, version_id, with_for_update=True)
            if version is None or version.purged_at is not None:
                continue  # another worker's pass got there first
            lifecycle.version_purged(session, version, now, actor=actor)
        log.info("purged the checkpoint of retired version %s", version_id)
        purged.append(version_id)
    return purged


def purge_derived_copies(
    database_url: str, cache_root: Path, *, actor: str, model_id: str, version_id: str | None
) -> list[str]:
    """After a deletion: remove every image-derived file under the service's cache root (decoded arrays,
    unpacked archives, condensed sets; jobs store none, but the CLI or an older version may have) and
    record what went in the audit chain. The dataset's source files belong to the user: never touched."""
    removed = purge_derived(cache_root)
    with session_scope(database_url) as session:
        append_audit_event(
            session,
            AuditEventType.derived_data_purged,
            actor=actor,
            model_id=model_id,
            version_id=version_id,
            data={"cache_root": str(cache_root), "removed": removed},
        )
    return removed
