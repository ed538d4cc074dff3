"""``energylake access``: grant, revoke and list who may read the lake, for which tenants,
branches and purposes (``analytics.grants``); every change leaves an access record."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from analytics.grants import ALL_TENANTS, Grant, GrantBook, os_user
from analytics.objections import ObjectionRegister
from audit.log import AuditLog
from cli.common import cli_context, when
from contracts import load_registry
from lake.keys import KeyStore
from pipelines.settings import Settings

__all__ = ["app"]

app = typer.Typer(
    name="access",
    help="Grants to read the lake (tenants, branches, purposes): grant, revoke, list.",
    no_args_is_help=True,
)

Principal = Annotated[str, typer.Argument(help="A person or a service (a-z 0-9 . _ @ -).")]
Tenants = Annotated[
    list[str] | None,
    typer.Option("--tenant", help="A tenant (client id), repeatable; '*' for every tenant."),
]
Purposes = Annotated[
    list[str] | None,
    typer.Option("--purpose", help="A purpose of the privacy policy, repeatable."),
]
DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Override data_dir.")]
Branches = Annotated[
    list[str] | None,
    typer.Option("--branch", help="Only these branches of the tenants, repeatable."),
]


def _book(settings: Settings, audit: AuditLog | None = None) -> GrantBook:
    registry = load_registry(settings.contracts_dir) if settings.contracts_dir else load_registry()
    return GrantBook(settings.lake_store(), registry, audit)


def access_log(settings: Settings) -> AuditLog:
    """The access log: fail-closed (a record that cannot be made durable stops the
    command before it returns anything)."""
    return AuditLog(
        settings.data_dir / "audit" / "access",
        component="access",
        fail_closed=True,
        anchor_dir=settings.audit_anchor_dir,
        anchor_every_records=settings.audit_anchor_every_records,
        anchor_interval_s=settings.audit_anchor_interval_s,
    )


@app.command("grant")
def access_grant(
    ctx: typer.Context,
    principal: Principal,
    tenant: Tenants = None,
    purpose: Purposes = None,
    branch: Branches = None,
    data_dir: DataDir = None,
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file",
            help="Make the principal a service: a fresh token is written to this new file "
            "(mode 0600); only its hash is kept.",
        ),
    ] = None,
) -> None:
    """Let PRINCIPAL read TENANT(s) for PURPOSE(s) (added to what it has)."""
    cli = cli_context(ctx)
    settings = cli.settings(data_dir=data_dir)
    log = access_log(settings)
    try:
        made = _book(settings, log).grant(
            principal,
            tenants=tenant or [],
            purposes=purpose or [],
            branches=branch or [],
            token_file=token_file,
            actor=os_user(),
        )
    finally:
        log.close()
    cli.console.print(f"granted: {principal} ({made.kind})")
    cli.console.print(_grants_table([made]))
    if token_file is not None:
        cli.console.print(f"token written to {token_file} (mode 0600); it is not kept anywhere")


@app.command("revoke")
def access_revoke(
    ctx: typer.Context,
    principal: Principal,
    tenant: Tenants = None,
    purpose: Purposes = None,
    branch: Branches = None,
    data_dir: DataDir = None,
) -> None:
    """Take tenants, purposes or branches from PRINCIPAL; with none named, its whole grant."""
    cli = cli_context(ctx)
    settings = cli.settings(data_dir=data_dir)
    log = access_log(settings)
    try:
        left = _book(settings, log).revoke(
            principal,
            tenants=tenant or [],
            purposes=purpose or [],
            branches=branch or [],
            actor=os_user(),
        )
    finally:
        log.close()
    if left is None:
        cli.console.print(f"revoked: {principal} has no grant now")
    else:
        cli.console.print(f"revoked; {principal} keeps:")
        cli.console.print(_grants_table([left]))


@app.command("list")
def access_list(ctx: typer.Context, data_dir: DataDir = None) -> None:
    """Every principal with its tenants, branches and purposes."""
    cli = cli_context(ctx)
    grants = _book(cli.settings(data_dir=data_dir)).load()
    if not grants.grants:
        cli.console.print(
            "no grants yet: `energylake access grant PRINCIPAL --tenant T --purpose P`"
        )
        return
    cli.console.print(f"grants, revision {grants.revision}:")
    cli.console.print(_grants_table(list(grants.grants.values())))


def _grants_table(grants: list[Grant]) -> Table:
    table = Table("principal", "kind", "tenants", "branches", "purposes", "granted", "by")
    for g in sorted(grants, key=lambda g: g.principal):
        table.add_row(
            g.principal,
            g.kind,
            "every tenant" if ALL_TENANTS in g.tenants else ", ".join(sorted(g.tenants)),
            "all" if g.branches is None else ", ".join(sorted(g.branches)),
            ", ".join(sorted(g.purposes)),
            g.granted_at,
            g.granted_by,
        )
    return table


@app.command("object")
def access_object(
    ctx: typer.Context,
    subject: Annotated[str, typer.Option("--subject", help="The data subject's id.")],
    kind: Annotated[str, typer.Option("--kind", help="technician or contact.")],
    tenant: Annotated[str, typer.Option("--tenant", help="The tenant whose data names them.")],
    purpose: Annotated[str, typer.Option("--purpose", help="The purpose objected to.")],
    since: Annotated[
        str | None, typer.Option("--since", help="When it takes effect (ISO; default now).")
    ] = None,
    withdraw: Annotated[
        bool, typer.Option("--withdraw", help="The subject withdrew the objection.")
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Record that a data subject objects to a purpose (or withdraws it): from then on no
    session for that purpose shows their rows. The register keeps a pseudonym, not the id."""
    cli = cli_context(ctx)
    settings = cli.settings(data_dir=data_dir)
    registry = load_registry(settings.contracts_dir) if settings.contracts_dir else load_registry()
    log = access_log(settings)
    try:
        register = ObjectionRegister(settings.lake_store(), registry, KeyStore(settings.keys), log)
        if withdraw:
            found = register.withdraw(
                tenant=tenant, kind=kind, subject_id=subject, purpose=purpose, actor=os_user()
            )
            cli.console.print("withdrawn" if found else "there was no such objection")
            return
        made = register.record(
            tenant=tenant,
            kind=kind,
            subject_id=subject,
            purpose=purpose,
            actor=os_user(),
            since=when(since, "--since"),
        )
    finally:
        log.close()
    cli.console.print(
        f"objection recorded: {kind} {made.subject} of {tenant} objects to {purpose}"
        f" from {made.since}"
    )
