"""Serving the dashboard from the api: its pages at `/`, its files at `/static/`, its headers."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from eventpipe.dashboard import jobs, manage, routes, session
from eventpipe.dashboard.headers import SecurityHeaders
from eventpipe.dashboard.pages import HERE, install_page_handlers


def install_dashboard(app: FastAPI) -> None:
    """Add the dashboard's routes, static files, security headers and page errors to `app`."""
    install_page_handlers(app)
    app.include_router(session.router)
    # Before the project pages: /projects/new is not a project id.
    app.include_router(manage.router)
    app.include_router(routes.router)
    app.include_router(jobs.router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.add_middleware(SecurityHeaders)
