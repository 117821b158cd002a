"""Typer entry point: `eventpipe <role>` and the operations commands."""

from __future__ import annotations

import logging
import sys
from typing import Annotated, NoReturn

import typer
from pydantic import ValidationError

from eventpipe.core.config import Settings, describe_error, get_settings
from eventpipe.core.logging import configure_logging
from eventpipe.domain.jobs import STATUSES
from eventpipe.local.running import with_running_servers

app = typer.Typer(
    name="eventpipe",
    help="Self-hosted real-time event pipeline (Kafka, Redis, PostgreSQL).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
log = logging.getLogger("eventpipe")


def fail(message: str, code: int = 2) -> NoReturn:
    """One line on stderr and an exit status: the CLI's only way to report a wrong input."""
    typer.echo(f"eventpipe: {message}", err=True)
    raise typer.Exit(code)


def load_settings(*, beside_up: bool = True) -> Settings:
    """The environment's settings; with `beside_up`, each unset server URL is taken from an
    `eventpipe up` running on the same state directory, if any."""
    try:
        settings = get_settings()
        if beside_up:
            settings = with_running_servers(settings)
    except ValidationError as error:
        fail(describe_error(error))
    configure_logging(settings.log_level)
    return settings


def require(settings: Settings, *names: str) -> None:
    for name in names:
        if getattr(settings, name) is None:
            fail(f"EVENTPIPE_{name.upper()} is not set (or run everything with `eventpipe up`)")


@app.command()
def api(
    workers: Annotated[int, typer.Option(min=1, max=64, help="uvicorn worker processes")] = 1,
) -> None:
    """Serve the HTTP API (ingest, auth, queries, dashboard)."""
    import uvicorn

    from eventpipe.api.serve import DeadlineProtocol, raise_open_files_limit

    settings = load_settings()
    raise_open_files_limit()
    uvicorn.run(
        "eventpipe.api.app:create_app",
        factory=True,
        host=settings.http_host,
        port=settings.http_port,
        # Slow clients are cut after EVENTPIPE_HTTP_HEADER_TIMEOUT_S / _BODY_TIMEOUT_S.
        http=DeadlineProtocol,
        workers=workers,
        log_level=settings.log_level.lower(),
        access_log=False,
        # uvicorn believes X-Forwarded-For from loopback by default: only the named proxies.
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=[str(network) for network in settings.trusted_proxies],
    )


@app.command()
def processor() -> None:
    """Consume the events topic in the processors' consumer group."""
    from eventpipe.core.signals import StopFlag
    from eventpipe.processor.app import run_processor

    settings = load_settings()
    require(settings, "kafka_bootstrap", "redis_url", "database_url")
    run_processor(settings, StopFlag().install())


@app.command()
def worker() -> None:
    """Run background jobs from the message queue."""
    from eventpipe.worker.app import run_worker

    settings = load_settings()
    require(settings, "redis_url", "database_url")
    run_worker(settings)


@app.command()
def migrate(
    revision: Annotated[str, typer.Option(help="target revision")] = "head",
    down: Annotated[bool, typer.Option("--down", help="downgrade to REVISION")] = False,
) -> None:
    """Apply (or revert) the PostgreSQL schema migrations; with EVENTPIPE_KAFKA_BOOTSTRAP set,
    also create the missing Kafka topics (a deployment's one-shot step before the roles)."""
    from confluent_kafka import KafkaException

    from eventpipe.core.kafka import ensure_topics, security_config
    from eventpipe.migrations.runner import downgrade, upgrade

    settings = load_settings()
    require(settings, "database_url")
    url = str(settings.database_url)
    if down:
        downgrade(url, revision)
        typer.echo(f"database at revision {revision}")
        return
    upgrade(url, revision)
    typer.echo(f"database at revision {revision}")
    if settings.kafka_bootstrap is not None:
        topics = dict.fromkeys((settings.events_topic, settings.dlq_topic), settings.partitions)
        try:
            ensure_topics(settings.kafka_bootstrap, topics, security=security_config(settings))
        except KafkaException as error:
            fail(
                f"cannot create the topics at {settings.kafka_bootstrap}: {error.args[0].str()}", 1
            )
        typer.echo(f"topics {', '.join(topics)} present")


user_app = typer.Typer(help="Manage accounts.", no_args_is_help=True)
app.add_typer(user_app, name="user")


def _read_password(given: str | None) -> str:
    if given is not None:
        return given
    if sys.stdin.isatty():
        return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))
    return sys.stdin.readline().rstrip("\n")


@user_app.command("create")
def user_create(
    email: Annotated[str, typer.Option(help="the account's email, its sign-in name")],
    password: Annotated[
        str | None,
        typer.Option(help="the password; without it, read from standard input (safer)"),
    ] = None,
) -> None:
    """Create an account (the first one, before any sign-up)."""
    from eventpipe.auth.admin import UserCreateError, create_user_sync

    settings = load_settings()
    require(settings, "database_url")
    try:
        user_id = create_user_sync(settings, email=email, password=_read_password(password))
    except UserCreateError as error:
        fail(str(error), code=1)
    typer.echo(f"created user {user_id} <{email.strip().lower()}>")


dlq_app = typer.Typer(help="Inspect and replay the dead-letter topic.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")

DryRun = Annotated[
    bool, typer.Option("--dry-run", help="list what would be replayed; produce and commit nothing")
]
Limit = Annotated[int | None, typer.Option(min=1, help="read at most this many dead letters")]


@dlq_app.command("replay")
def dlq_replay(dry_run: DryRun = False, limit: Limit = None) -> None:
    """Send dead letters back to the events topic (after a fix) up to the DLQ's current end."""
    _run_dlq(dry_run=dry_run, limit=limit)


@dlq_app.command("list")
def dlq_list(limit: Limit = None) -> None:
    """List the dead letters a replay would take: the same as `dlq replay --dry-run`."""
    _run_dlq(dry_run=True, limit=limit)


def _run_dlq(*, dry_run: bool, limit: int | None) -> None:
    from eventpipe.core.signals import StopFlag
    from eventpipe.processor.dlq import DlqError, replay_dead_letters

    settings = load_settings()
    require(settings, "kafka_bootstrap")
    try:
        report = replay_dead_letters(
            settings, dry_run=dry_run, limit=limit, say=typer.echo, stop=StopFlag().install()
        )
    except DlqError as error:
        fail(str(error), code=1)
    typer.echo(report.summary())
    if report.interrupted:
        raise typer.Exit(1)


jobs_app = typer.Typer(
    help="Look at the job queue; run a dead-lettered job again.", no_args_is_help=True
)
app.add_typer(jobs_app, name="jobs")

Status = Annotated[
    str | None, typer.Option(help="todo, doing, succeeded, failed (dead-lettered), aborted")
]
JobId = Annotated[int, typer.Argument(min=1, help="the job's id in the queue (`jobs list`)")]


@jobs_app.command("list")
def jobs_list(
    status: Status = None,
    task: Annotated[str | None, typer.Option(help="export, deliver_webhook, ...")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    json_output: Annotated[bool, typer.Option("--json", help="one JSON object a line")] = False,
) -> None:
    """The newest jobs, one a line: id, status, task, attempts, queue, arguments."""
    from eventpipe.cli_jobs import print_jobs

    if status is not None and status not in STATUSES:
        fail(f"--status: expected one of {', '.join(STATUSES)}, got {status!r}")
    settings = load_settings()
    require(settings, "database_url")
    print_jobs(settings, status=status, task=task, limit=limit, as_json=json_output)


@jobs_app.command("show")
def jobs_show(job_id: JobId) -> None:
    """One job: its arguments, every state it went through, and the error of each failed attempt."""
    from eventpipe.cli_jobs import show_job
    from eventpipe.domain.jobs import JobNotFound

    settings = load_settings()
    require(settings, "database_url")
    try:
        show_job(settings, job_id)
    except JobNotFound as error:
        fail(str(error), code=1)


@jobs_app.command("retry")
def jobs_retry(job_id: JobId) -> None:
    """Run a failed (dead-lettered) job again, now."""
    from eventpipe.cli_jobs import retry
    from eventpipe.domain.jobs import JobNotFound, NotRetryable

    settings = load_settings()
    require(settings, "database_url")
    try:
        retry(settings, job_id)
    except (JobNotFound, NotRetryable) as error:
        fail(str(error), code=1)
    typer.echo(f"job {job_id} is queued again")


@app.command()
def up(
    fast_start: Annotated[
        bool, typer.Option(help="C1-only JIT and a class-data archive for a quicker Kafka start")
    ] = True,
) -> None:
    """Start local Kafka, Redis and PostgreSQL (where their URLs are unset) and every role."""
    from eventpipe.local.up import run_up

    settings = load_settings(beside_up=False)
    raise typer.Exit(run_up(settings, fast_start=fast_start))


@app.command()
def doctor() -> None:
    """Check every dependency; say what is wrong and how to fix it."""
    from eventpipe.local.doctor import run_doctor

    settings = load_settings()
    raise typer.Exit(run_doctor(settings))


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def bench(ctx: typer.Context) -> None:
    """Run the benchmarks (`--quick`, `--output DIR`, names); needs a source checkout.

    Every argument goes to `python -m bench` in the checkout: `eventpipe bench --help` lists them.
    """
    from pathlib import Path

    from eventpipe.cli_bench import run_bench

    raise typer.Exit(run_bench(ctx.args, Path.cwd()))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
