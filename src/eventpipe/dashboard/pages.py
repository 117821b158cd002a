"""What every dashboard page shares: templates, the signed-in user, the project and its role,
and the two ways a page ends early (a redirect, or an error page)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import jinja2
from fastapi import Depends, FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from eventpipe import __version__
from eventpipe.api.deps import RedisDep, ResourcesDep, SessionDep, get_claims
from eventpipe.core.errors import ApiError
from eventpipe.domain.projects import RANK, projects_of, role_in
from eventpipe.domain.tables import Project, Role, User

HERE = Path(__file__).parent
# Autoescape everywhere: event content, names and emails are always shown as text.
_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
_env.globals["version"] = __version__
templates = Jinja2Templates(env=_env)


def when(value: str | datetime | None) -> str:
    """An ISO-8601 time as the dashboard shows it: UTC, to the second."""
    if value is None:
        return ""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


_env.filters["when"] = when


class Redirect(Exception):
    """End the request with a 303 to `location` (a path of this server)."""

    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


class PageError(Exception):
    """End the request with an error page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def render(request: Request, template: str, status: int = 200, /, **context: Any) -> Response:
    """A page; `page` (a ProjectPage) also gives its `user`, and `tab` marks the current one."""
    project = context.get("page")
    context.setdefault("page", None)
    context.setdefault("user", project.user if project is not None else None)
    context.setdefault("tab", "")
    return templates.TemplateResponse(request, template, context, status_code=status)


def redirect(location: str) -> Response:
    return RedirectResponse(location, status_code=303)


def safe_next(value: str | None) -> str:
    """A path of this server to go to after sign-in; anything else (another site) is "/"."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def sign_in_path(request: Request) -> str:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return f"/signin?next={quote(here, safe='')}"


async def _redirect(_: Request, error: Exception) -> Response:
    assert isinstance(error, Redirect)  # noqa: S101 - registered for Redirect only
    return redirect(error.location)


async def _page_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, PageError)  # noqa: S101 - registered for PageError only
    return render(request, "error.html", error.status, message=error.message, user=None)


def install_page_handlers(app: FastAPI) -> None:
    app.add_exception_handler(Redirect, _redirect)
    app.add_exception_handler(PageError, _page_error)


async def page_user(
    request: Request, resources: ResourcesDep, redis: RedisDep, session: SessionDep
) -> User:
    """The signed-in user (by the access cookie), or a redirect to the sign-in page."""
    try:
        claims = await get_claims(request, resources, redis, None)
    except ApiError as error:
        if error.status == 401:
            raise Redirect(sign_in_path(request)) from error
        raise PageError(error.status, error.message) from error
    user = await session.get(User, uuid.UUID(claims.sub))
    if user is None:
        raise Redirect(sign_in_path(request))
    return user


PageUser = Annotated[User, Depends(page_user)]


@dataclass(frozen=True)
class ProjectPage:
    """A project page's project, the caller's role in it, and their other projects."""

    user: User
    project: Project
    role: Role
    projects: list[tuple[Project, str]]

    def can(self, minimum: Role) -> bool:
        return RANK[self.role] >= RANK[minimum]

    def require(self, minimum: Role) -> None:
        if not self.can(minimum):
            raise PageError(403, f"This needs the {minimum.value} role or higher.")


async def project_page(project_id: str, user: PageUser, session: SessionDep) -> ProjectPage:
    """The path's project, if the user is a member; otherwise "not found", as for the api."""
    try:
        project_uuid = uuid.UUID(project_id)
    except ValueError as error:
        raise PageError(404, "No such project.") from error
    role = await role_in(session, project_id=project_uuid, user_id=user.id)
    project = await session.get(Project, project_uuid) if role is not None else None
    if role is None or project is None:
        raise PageError(404, "No such project.")
    return ProjectPage(user, project, role, await projects_of(session, user_id=user.id))


ProjectDep = Annotated[ProjectPage, Depends(project_page)]
