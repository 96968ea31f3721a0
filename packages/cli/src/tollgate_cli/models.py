"""`tollgate models`: the catalogue of models and their prices.

Every change goes through `tollgate_server.services.models`, like the API's; the schema's
triggers announce it, and running servers reload their catalogue before their next request.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from tollgate_server.model_defaults import DEFAULT_CONTEXT_WINDOW, DEFAULT_MAX_OUTPUT_TOKENS

from tollgate_cli.output import JsonFlag, echo_json, note, table

if TYPE_CHECKING:
    from tollgate_server.schemas import ModelUpdate
    from tollgate_server.services.catalogue import CatalogueModel

    from tollgate_cli.catalogue_file import Change
    from tollgate_cli.context import Db

app = typer.Typer(help="The model catalogue and its prices.", no_args_is_help=True)

Name = Annotated[str, typer.Argument(help="The model's name, as clients request it.")]
InputPrice = Annotated[
    str,
    typer.Option("--input-price", help="Credits per million input tokens.", show_default=False),
]
OutputPrice = Annotated[
    str,
    typer.Option("--output-price", help="Credits per million output tokens.", show_default=False),
]
Kind = Annotated[
    str,
    typer.Option(
        "--kind",
        help="chat (served by /v1/chat/completions) or embedding (by /v1/embeddings).",
    ),
]
CachedInputPrice = Annotated[
    str | None,
    typer.Option(
        "--cached-input-price",
        help="Credits per million input tokens read from the prompt cache (default: the "
        "input price).",
        show_default=False,
    ),
]


def model_json(model: CatalogueModel, upstreams: set[str]) -> dict[str, Any]:
    """A model as the admin API shows it. `available` reflects the upstreams configured in
    this command's environment, which may differ from a running server's."""
    from tollgate_server.services.models import model_public

    return model_public(model, configured=model.provider in upstreams)


def show_models(models: list[CatalogueModel], json_output: bool) -> None:
    if json_output:
        from tollgate_cli.providers import upstream_names

        upstreams = upstream_names()
        echo_json([model_json(m, upstreams) for m in models])
        return
    rows = [
        (
            m.name,
            m.kind,
            m.provider,
            m.upstream_model,
            m.enabled,
            m.free,
            m.price and _credits(m.price.input_per_million),
            m.price and _credits(m.price.output_per_million),
            m.context_window,
            m.max_output_tokens,
            m.default_max_tokens,
        )
        for m in models
    ]
    typer.echo(
        table(
            [
                "NAME",
                "KIND",
                "PROVIDER",
                "UPSTREAM_MODEL",
                "ENABLED",
                "FREE",
                "INPUT/M",
                "OUTPUT/M",
                "CONTEXT",
                "MAX_OUT",
                "DEFAULT_MAX",
            ],
            rows,
        )
    )


def _report(model: CatalogueModel, message: str, json_output: bool) -> None:
    """After a change: the model as JSON, or `message` for people."""
    if json_output:
        from tollgate_cli.providers import upstream_names

        echo_json(model_json(model, upstream_names()))
    else:
        typer.echo(message)


def _credits(micro: int) -> str:
    from tollgate_core import format_credits

    return format_credits(micro)


@app.command("list")
def list_models(json_output: JsonFlag = False) -> None:
    """List every model, enabled or not, with its current prices (credits per million tokens).

    Example: tollgate models list --json
    """
    from tollgate_server.services import models as catalogue

    from tollgate_cli.context import run

    async def operation(db: Db) -> list[CatalogueModel]:
        async with db.session() as session:
            return await catalogue.list_models(session=session)

    models = run(operation)
    if models or json_output:
        show_models(models, json_output)
    else:
        note("the catalogue is empty: add a model with `tollgate models add`")


@app.command("add")
def add(
    name: Name,
    provider: Annotated[
        str,
        typer.Option("--provider", help="The upstream's name, such as openai.", show_default=False),
    ],
    upstream_model: Annotated[
        str,
        typer.Option(
            "--upstream-model", help="The model's id at the upstream.", show_default=False
        ),
    ],
    input_price: InputPrice,
    output_price: OutputPrice,
    cached_input_price: CachedInputPrice = None,
    kind: Kind = "chat",
    context_window: Annotated[
        int, typer.Option("--context-window", help="Tokens of prompt and output together.")
    ] = DEFAULT_CONTEXT_WINDOW,
    max_output_tokens: Annotated[
        int, typer.Option("--max-output-tokens", help="Most output tokens one request may ask.")
    ] = DEFAULT_MAX_OUTPUT_TOKENS,
    default_max_tokens: Annotated[
        int | None,
        typer.Option(
            "--default-max-tokens",
            help="max_tokens when a request names none. Default: the lower of 1024 and "
            "--max-output-tokens.",
            show_default=False,
        ),
    ] = None,
    free: Annotated[
        bool, typer.Option("--free", help="A free model: only it may have a zero price.")
    ] = False,
    disabled: Annotated[
        bool, typer.Option("--disabled", help="Add it disabled: not served until enabled.")
    ] = False,
    json_output: JsonFlag = False,
) -> None:
    """Add a model with its prices (credits per million tokens, input and output apart).

    Example: tollgate models add gpt-4o-mini --provider openai --upstream-model gpt-4o-mini \\
    --input-price 0.15 --output-price 0.6

    An embedding model: tollgate models add text-embedding-3-small --kind embedding \\
    --provider openai --upstream-model text-embedding-3-small --input-price 0.02 \\
    --output-price 0
    """
    from tollgate_server.schemas import ModelCreate
    from tollgate_server.services import models as catalogue

    from tollgate_cli.context import run
    from tollgate_cli.inputs import validated

    data = validated(
        ModelCreate,
        name=name,
        provider=provider,
        upstream_model=upstream_model,
        kind=kind,
        enabled=not disabled,
        free=free,
        context_window=context_window,
        max_output_tokens=max_output_tokens,
        default_max_tokens=default_max_tokens,
        input_price=input_price,
        output_price=output_price,
        cached_input_price=cached_input_price,
    )

    async def operation(db: Db) -> CatalogueModel:
        async with db.session() as session:
            return await catalogue.create_model(session=session, data=data, actor_id=None)

    _report(
        run(operation),
        f"added {name} ({'disabled' if disabled else 'enabled'})",
        json_output,
    )


def change(name: str, data: ModelUpdate) -> CatalogueModel:
    """Apply `data` to the model through the same service as the API."""
    from tollgate_server.errors import NotFound
    from tollgate_server.services import models as catalogue

    from tollgate_cli.context import run
    from tollgate_cli.errors import CliError

    async def operation(db: Db) -> CatalogueModel:
        async with db.session() as session:
            return await catalogue.update_model(
                session=session, name=name, data=data, actor_id=None
            )

    try:
        return run(operation)
    except NotFound:
        raise CliError(f"no model named {name} (see `tollgate models list`)") from None


@app.command("set-price")
def set_price(
    name: Name,
    input_price: Annotated[
        str | None,
        typer.Option("--input-price", help="Credits per million input tokens.", show_default=False),
    ] = None,
    output_price: Annotated[
        str | None,
        typer.Option(
            "--output-price", help="Credits per million output tokens.", show_default=False
        ),
    ] = None,
    cached_input_price: CachedInputPrice = None,
    json_output: JsonFlag = False,
) -> None:
    """Set a model's prices from now on (generations already made keep theirs).

    Give one price or more; the others stay as they are.

    Example: tollgate models set-price gpt-4o-mini --input-price 0.2 --output-price 0.8
    """
    from tollgate_server.schemas import ModelUpdate

    from tollgate_cli.errors import CliError
    from tollgate_cli.inputs import validated

    if input_price is None and output_price is None and cached_input_price is None:
        raise CliError("give --input-price, --output-price or both")
    prices = {"input_price": input_price, "output_price": output_price}
    if cached_input_price is not None:
        prices["cached_input_price"] = cached_input_price
    model = change(name, validated(ModelUpdate, **prices))
    price = model.price
    assert price is not None  # a price was just set
    _report(
        model,
        f"{model.name} now costs {_credits(price.input_per_million)} per million input tokens "
        f"and {_credits(price.output_per_million)} per million output tokens",
        json_output,
    )


@app.command("set-fallbacks")
def set_fallbacks(
    name: Name,
    fallback: Annotated[
        list[str] | None,
        typer.Argument(help="Models tried in this order when all of NAME's deployments fail."),
    ] = None,
    json_output: JsonFlag = False,
) -> None:
    """Set a model's fallbacks (none given: clear them). The hold is then taken at the dearest
    of the model and its fallbacks; the charge is at the price of the model that served.

    Example: tollgate models set-fallbacks gpt-4o gpt-4o-mini claude-3-5-haiku
    """
    from tollgate_server.schemas import ModelUpdate

    from tollgate_cli.inputs import validated

    model = change(name, validated(ModelUpdate, fallbacks=fallback or []))
    _report(model, f"{name} falls back to {', '.join(model.fallbacks) or 'nothing'}", json_output)


@app.command("set-kind")
def set_kind(
    name: Name,
    kind: Annotated[str, typer.Argument(help="chat or embedding.", show_default=False)],
    json_output: JsonFlag = False,
) -> None:
    """Say what a model does: chat (served by /v1/chat/completions) or embedding (served by
    /v1/embeddings, priced per million input tokens).

    Example: tollgate models set-kind text-embedding-3-small embedding
    """
    from tollgate_server.schemas import ModelUpdate

    from tollgate_cli.inputs import validated

    model = change(name, validated(ModelUpdate, kind=kind))
    _report(model, f"{name} is a {model.kind} model", json_output)


@app.command("enable")
def enable(name: Name, json_output: JsonFlag = False) -> None:
    """Serve a model again.

    Example: tollgate models enable gpt-4o-mini
    """
    from tollgate_server.schemas import ModelUpdate

    _report(change(name, ModelUpdate(enabled=True)), f"{name} is enabled", json_output)


@app.command("disable")
def disable(name: Name, json_output: JsonFlag = False) -> None:
    """Stop serving a model (requests for it are refused; its history stays).

    Example: tollgate models disable gpt-4o-mini
    """
    from tollgate_server.schemas import ModelUpdate

    _report(change(name, ModelUpdate(enabled=False)), f"{name} is disabled", json_output)


@app.command("import")
def import_catalogue(
    file: Annotated[
        Path,
        typer.Argument(
            help="A YAML file (or JSON, named *.json): a list of models with the fields of "
            "`models add` (name, provider, upstream_model, input_price, output_price, ...).",
            show_default=False,
        ),
    ],
    json_output: JsonFlag = False,
) -> None:
    """Create the file's missing models and update those that differ; the rest stay untouched.

    Importing the same file twice changes nothing the second time. Every entry is checked
    before anything is written; models are then written one by one, so after a failure
    (say, the database went away) running the import again finishes the job.

    Example: tollgate models import catalogue.yaml
    """
    from tollgate_server.services import models as catalogue

    from tollgate_cli.catalogue_file import Change, model_changes, read_catalogue_file
    from tollgate_cli.context import run

    wanted = read_catalogue_file(file)

    async def operation(db: Db) -> list[Change]:
        done: list[Change] = []
        async with db.session() as session:
            existing = {m.name: m for m in await catalogue.list_models(session=session)}
            for data in wanted:
                current = existing.get(data.name)
                if current is None:
                    await catalogue.create_model(session=session, data=data, actor_id=None)
                    done.append(Change(data.name, "created"))
                    continue
                update = model_changes(current, data)
                if update is None:
                    done.append(Change(data.name, "unchanged"))
                    continue
                await catalogue.update_model(
                    session=session, name=data.name, data=update, actor_id=None
                )
                done.append(Change(data.name, "updated", tuple(sorted(update.model_fields_set))))
        return done

    changes = run(operation)
    print_import(changes, json_output)


def print_import(changes: list[Change], json_output: bool) -> None:
    counts = {
        action: sum(1 for c in changes if c.action == action)
        for action in ("created", "updated", "unchanged")
    }
    if json_output:
        echo_json(
            {
                **counts,
                "models": [
                    {"name": c.name, "action": c.action, "fields": list(c.fields)} for c in changes
                ],
            }
        )
        return
    for c in changes:
        if c.action != "unchanged":
            detail = f" ({', '.join(c.fields)})" if c.fields else ""
            typer.echo(f"{c.action} {c.name}{detail}")
    typer.echo(
        f"{counts['created']} created, {counts['updated']} updated, {counts['unchanged']} unchanged"
    )
