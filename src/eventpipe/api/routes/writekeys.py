"""A project's write keys: create (the key is shown once), list (prefix only), update, revoke."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, status

from eventpipe.api.deps import Member, SessionDep, Viewer
from eventpipe.api.openapi import PROJECT_ERRORS
from eventpipe.auth.writekeys import (
    create_write_key,
    revoke_write_key,
    update_write_key,
    write_keys_of,
)
from eventpipe.core.errors import ApiError
from eventpipe.domain.schemas import (
    WriteKeyCreate,
    WriteKeyCreated,
    WriteKeyPublic,
    WriteKeyUpdate,
)

router = APIRouter(
    prefix="/api/projects/{project_id}/write-keys", tags=["write keys"], responses=PROJECT_ERRORS
)


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_key(body: WriteKeyCreate, access: Member, session: SessionDep) -> WriteKeyCreated:
    """Create a write key; the full key is in this answer only and never again."""
    row, key = await create_write_key(
        session, project_id=access.project_id, name=body.name, allowed_origins=body.allowed_origins
    )
    await session.commit()
    await session.refresh(row)
    return WriteKeyCreated(**WriteKeyPublic.model_validate(row).model_dump(), key=key)


@router.get("")
async def list_keys(access: Viewer, session: SessionDep) -> list[WriteKeyPublic]:
    """The project's write keys, by prefix."""
    rows = await write_keys_of(session, project_id=access.project_id)
    return [WriteKeyPublic.model_validate(row) for row in rows]


@router.patch("/{key_id}")
async def update_key(
    key_id: uuid.UUID, body: WriteKeyUpdate, access: Member, session: SessionDep
) -> WriteKeyPublic:
    """Rename a write key or change the browser origins allowed to send with it."""
    row = await update_write_key(
        session,
        project_id=access.project_id,
        key_id=key_id,
        name=body.name,
        allowed_origins=body.allowed_origins,
    )
    if row is None:
        raise ApiError(404, "not_found", "write key not found")
    await session.commit()
    return WriteKeyPublic.model_validate(row)


@router.delete("/{key_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_key(key_id: uuid.UUID, access: Member, session: SessionDep) -> None:
    """Revoke a write key: ingest with it is refused (within the api's key cache time)."""
    if not await revoke_write_key(session, project_id=access.project_id, key_id=key_id):
        raise ApiError(404, "not_found", "write key not found or already revoked")
    await session.commit()
