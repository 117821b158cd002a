"""Request and response bodies of the api (XCreate / XUpdate / XPublic)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field, StringConstraints

from eventpipe.auth.origins import MAX_ORIGINS, normalize_origin
from eventpipe.auth.passwords import MAX_LENGTH
from eventpipe.domain.tables import Role

# PostgreSQL's text types cannot hold NUL: a string with one is refused as invalid input (422)
# before it reaches a query (where it was a 500). Every string field of a request body is a Text;
# the pattern is in the OpenAPI schema too.
NO_NUL = r"^[^\x00]*$"
Text = Annotated[str, StringConstraints(pattern=NO_NUL)]
Name = Annotated[Text, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class StrictBody(BaseModel):
    # Unknown fields are an error, so a typo is not silently ignored.
    model_config = ConfigDict(extra="forbid")


class Credentials(StrictBody):
    email: EmailStr
    password: Annotated[Text, Field(min_length=1, max_length=MAX_LENGTH)]


class RefreshRequest(StrictBody):
    refresh_token: Annotated[Text, Field(min_length=1, max_length=200)]


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "Bearer"  # noqa: S105 - the OAuth token type, not a secret
    expires_in: int


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    email: str
    created_at: datetime


class ProjectCreate(StrictBody):
    name: Name


class ProjectUpdate(StrictBody):
    name: Name


class ProjectPublic(BaseModel):
    id: uuid.UUID
    name: str
    created_at: datetime
    role: Role


class MemberCreate(StrictBody):
    email: EmailStr
    role: Role = Role.MEMBER


class MemberUpdate(StrictBody):
    role: Role


class MemberPublic(BaseModel):
    user_id: uuid.UUID
    email: str
    role: Role


Origin = Annotated[Text, StringConstraints(max_length=300), AfterValidator(normalize_origin)]
Origins = Annotated[list[Origin], Field(max_length=MAX_ORIGINS)]


class WriteKeyCreate(StrictBody):
    name: Name = "default"
    # Browser origins allowed to send with the key, as https://shop.example.com or
    # https://*.example.com; empty (the default): any origin, as a public browser key is.
    allowed_origins: Origins = []


class WriteKeyUpdate(StrictBody):
    name: Name | None = None
    allowed_origins: Origins | None = None


class WriteKeyPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None
    allowed_origins: list[str]


class WriteKeyCreated(WriteKeyPublic):
    key: str
