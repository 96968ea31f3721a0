"""`tollgate deployments`: the upstreams that serve each model (routing).

Every change goes through `tollgate_server.services.deployments`, like the API's; running
servers reload their routes on the schema's NOTIFY. Keys are read from ``--api-key`` or, better
(it stays out of the shell's history), from ``TOLLGATE_DEPLOYMENT_API_KEY``, and stored
encrypted with the server's `TOLLGATE_SECRET_KEY` (or the data directory's generated key).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from tollgate_cli.output import JsonFlag, echo_json, fields, note, table

if TYPE_CHECKING:
    from tollgate_server.services.deployments import DeploymentRow

    from tollgate_cli.context import Db

app = typer.Typer(help="Deployments: the upstreams that serve each model.", no_args_is_help=True)

Id = Annotated[int, typer.Argument(help="The deployment's id (see `list`).", show_default=False)]
ApiKey = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="TOLLGATE_DEPLOYMENT_API_KEY",
        help="The upstream's key (stored encrypted, never shown again).",
        show_default=False,
        show_envvar=True,
    ),
]
BaseUrl = Annotated[
    str | None,
    typer.Option("--base-url", help="Default: the provider's configured URL.", show_default=False),
]
UpstreamModel = Annotated[
    str | None,
    typer.Option(
        "--upstream-model", help="Default: the model's upstream name.", show_default=False
    ),
]
Weight = Annotated[int | None, typer.Option("--weight", help="Share within its priority.")]
Priority = Annotated[int | None, typer.Option("--priority", help="Higher is tried first.")]
Rpm = Annotated[int | None, typer.Option("--rpm", help="Requests per minute at most.")]
Tpm = Annotated[int | None, typer.Option("--tpm", help="Tokens per minute at most.")]
FirstToken = Annotated[
    float | None,
    typer.Option("--first-token-timeout", help="Seconds to wait for its first token."),
]


def _json(row: DeploymentRow) -> dict[str, Any]:
    from tollgate_server.services.deployments import deployment_public

    return deployment_public(row)


def _show(row: DeploymentRow, message: str, json_output: bool) -> None:
    if json_output:
        echo_json(_json(row))
        return
    data = _json(row)
    typer.echo(fields([(name, data[name]) for name in data if name != "created_at"]))
    note(message)


def _box(db: Db) -> Any:
    from tollgate_server.services.credentials import CredentialBox

    return CredentialBox(db.settings.resolved_secret_key())


@app.command("list")
def list_deployments(json_output: JsonFlag = False) -> None:
    """List every deployment (keys shown by their last four characters).

    Example: tollgate deployments list --json
    """
    from tollgate_server.services import deployments

    from tollgate_cli.context import run

    async def operation(db: Db) -> list[DeploymentRow]:
        async with db.session() as session:
            return await deployments.list_deployments(session=session)

    rows = run(operation)
    if json_output:
        echo_json([_json(r) for r in rows])
        return
    if not rows:
        note("no deployments: each model is served by its provider's default upstream")
        return
    typer.echo(
        table(
            ["ID", "MODEL", "PROVIDER", "BASE_URL", "KEY", "WEIGHT", "PRIORITY", "ENABLED"],
            [
                (
                    d["id"],
                    d["model"],
                    d["provider"],
                    d["base_url"],
                    d["api_key"],
                    d["weight"],
                    d["priority"],
                    d["enabled"] if d["disabled_reason"] is None else d["disabled_reason"],
                )
                for d in map(_json, rows)
            ],
        )
    )


@app.command("add")
def add(
    model: Annotated[str, typer.Argument(help="The catalogue model it serves.")],
    provider: Annotated[str, typer.Option("--provider", help="The provider kind, such as openai.")],
    base_url: BaseUrl = None,
    api_key: ApiKey = None,
    upstream_model: UpstreamModel = None,
    weight: Weight = 1,
    priority: Priority = 0,
    rpm: Rpm = None,
    tpm: Tpm = None,
    first_token_timeout: FirstToken = None,
    json_output: JsonFlag = False,
) -> None:
    """Serve a model from one more upstream.

    Example: TOLLGATE_DEPLOYMENT_API_KEY=sk-... tollgate deployments add gpt-4o-mini
    --provider openai --base-url https://eu.example.com/v1 --weight 2
    """
    from tollgate_core import load_providers
    from tollgate_server.deployment_schemas import DeploymentCreate
    from tollgate_server.services import deployments

    from tollgate_cli.context import run
    from tollgate_cli.inputs import validated

    data = validated(
        DeploymentCreate,
        model=model,
        provider=provider,
        base_url=base_url,
        api_key=api_key,
        upstream_model=upstream_model,
        weight=weight,
        priority=priority,
        requests_per_minute=rpm,
        tokens_per_minute=tpm,
        first_token_timeout=first_token_timeout,
    )
    known = set(load_providers().providers)

    async def operation(db: Db) -> DeploymentRow:
        async with db.session() as session:
            return await deployments.create_deployment(
                session=session, data=data, box=_box(db), known_providers=known, actor_id=None
            )

    _show(run(operation), "deployment added", json_output)


def _update(deployment_id: int, message: str, json_output: bool, **values: Any) -> None:
    from tollgate_server.deployment_schemas import DeploymentUpdate
    from tollgate_server.services import deployments

    from tollgate_cli.context import run
    from tollgate_cli.inputs import validated

    data = validated(DeploymentUpdate, **{k: v for k, v in values.items() if v is not None})

    async def operation(db: Db) -> DeploymentRow:
        async with db.session() as session:
            return await deployments.update_deployment(
                session=session, deployment_id=deployment_id, data=data, box=_box(db), actor_id=None
            )

    _show(run(operation), message, json_output)


@app.command("set")
def set_fields(
    deployment_id: Id,
    base_url: BaseUrl = None,
    api_key: ApiKey = None,
    upstream_model: UpstreamModel = None,
    weight: Weight = None,
    priority: Priority = None,
    rpm: Rpm = None,
    tpm: Tpm = None,
    first_token_timeout: FirstToken = None,
    json_output: JsonFlag = False,
) -> None:
    """Change a deployment's fields (only those given).

    Example: tollgate deployments set 3 --weight 5
    """
    _update(
        deployment_id,
        "deployment changed",
        json_output,
        base_url=base_url,
        api_key=api_key,
        upstream_model=upstream_model,
        weight=weight,
        priority=priority,
        requests_per_minute=rpm,
        tokens_per_minute=tpm,
        first_token_timeout=first_token_timeout,
    )


@app.command("disable")
def disable(deployment_id: Id, json_output: JsonFlag = False) -> None:
    """Stop sending traffic to a deployment. Example: tollgate deployments disable 3"""
    _update(deployment_id, "deployment disabled", json_output, enabled=False)


@app.command("enable")
def enable(deployment_id: Id, json_output: JsonFlag = False) -> None:
    """Send traffic to a deployment again (also after the gateway disabled it because its
    upstream refused the key). Example: tollgate deployments enable 3"""
    _update(deployment_id, "deployment enabled", json_output, enabled=True)


@app.command("remove")
def remove(deployment_id: Id) -> None:
    """Delete a deployment. Example: tollgate deployments remove 3"""
    from tollgate_server.services import deployments

    from tollgate_cli.context import run

    async def operation(db: Db) -> None:
        async with db.session() as session:
            await deployments.delete_deployment(
                session=session, deployment_id=deployment_id, actor_id=None
            )

    run(operation)
    note(f"deployment {deployment_id} removed")


@app.command("test")
def test(deployment_id: Id) -> None:
    """Send a one-token request to a deployment's upstream and say how it answered (it costs
    the operator that token at the vendor; no account is charged).

    Example: tollgate deployments test 3
    """
    import time

    import aiohttp
    from sqlalchemy import text
    from tollgate_core import GenerationRequest, Message, ProviderConfig, load_providers
    from tollgate_core.errors import UpstreamError
    from tollgate_server.services import deployments

    from tollgate_cli.context import run
    from tollgate_cli.output import fail

    classes = load_providers().providers

    async def operation(db: Db) -> str:
        async with db.session() as session:
            row = await deployments.get_deployment(session=session, deployment_id=deployment_id)
            model = (
                await session.execute(
                    text("SELECT upstream_model FROM models WHERE name = :n"),
                    {"n": row.model},
                )
            ).scalar_one()
        cls = classes.get(row.provider)
        if cls is None:
            return f"error: provider {row.provider} is not installed"
        key = None
        if row.api_key_encrypted is not None:
            key = _box(db).decrypt(row.api_key_encrypted, deployment_id=row.id)
        base_url = row.base_url or cls.configs_from_env(db.settings.provider_env())[0].base_url
        request = GenerationRequest(
            model=row.upstream_model or model,
            messages=(Message(role="user", content="Say OK."),),
            max_tokens=1,
        )
        async with aiohttp.ClientSession() as http:
            provider = cls(config=ProviderConfig("test", base_url, key), http=http)
            began = time.perf_counter()
            try:
                await provider.generate(request)
            except UpstreamError as exc:
                return f"error: {exc.code} ({exc.upstream_status}): {exc.message}"
        return f"ok in {round((time.perf_counter() - began) * 1000)} ms"

    answer = run(operation)
    if answer.startswith("error"):
        fail(answer)
    typer.echo(answer)
