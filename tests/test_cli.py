"""`tollgate` admin commands against the real test database, checked through the API.

The CLI calls the same services as the API, so what it changes must show in the API at once,
and what it refuses must change nothing.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import JWT_SECRET, PASSWORD, User
from tollgate_cli.main import app
from typer.testing import CliRunner, Result

pytestmark = pytest.mark.postgres

Cli = Callable[..., Result]


@pytest.fixture
def cli(database_url: str, tmp_path: Path) -> Cli:
    runner = CliRunner(
        env={
            "TOLLGATE_DATABASE_URL": database_url,
            "TOLLGATE_JWT_SECRET": JWT_SECRET,
            "TOLLGATE_DATA_DIR": str(tmp_path / "data"),
        }
    )

    def invoke(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
        return runner.invoke(app, list(args), input=input, env=env)

    return invoke


def ok(result: Result) -> str:
    assert result.exit_code == 0, f"exit {result.exit_code}: {result.output}"
    assert "Traceback" not in result.output
    return result.stdout


def refused(result: Result) -> str:
    """The one line a failed command wrote on stderr (and nothing on stdout)."""
    assert result.exit_code == 1, f"exit {result.exit_code}: {result.output}"
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert result.stdout == ""
    return lines[0]


def balance(api: httpx.Client, user: User) -> dict[str, str]:
    response = api.get("/v1/balance", headers=user.headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def ledger(api: httpx.Client, admin_headers: dict[str, str], user: User) -> list[dict[str, Any]]:
    response = api.get(
        f"/v1/admin/users/{user.id}/ledger", params={"limit": 100}, headers=admin_headers
    )
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


def admin_models(api: httpx.Client, admin_headers: dict[str, str]) -> dict[str, dict[str, Any]]:
    response = api.get("/v1/admin/models", headers=admin_headers)
    assert response.status_code == 200, response.text
    return {m["name"]: m for m in response.json()}


def _name(prefix: str = "cli") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --- credits ---------------------------------------------------------------------------------


def test_a_grant_shows_in_the_balance_and_a_repeat_changes_nothing(
    cli: Cli, api: httpx.Client, admin_headers: dict[str, str], make_user: Callable[..., User]
) -> None:
    user = make_user()
    key = uuid.uuid4().hex
    grant = ["credits", "grant", user.email, "12.5", "--reason", "top-up", "--idempotency-key", key]
    out = ok(cli(*grant))
    assert f"granted 12.5 credits to {user.email}" in out
    assert balance(api, user) == {"balance": "12.5", "held": "0", "available": "12.5"}
    entries = len(ledger(api, admin_headers, user))

    again = ok(cli(*grant))
    assert "replayed" in again
    assert balance(api, user)["balance"] == "12.5"
    assert len(ledger(api, admin_headers, user)) == entries

    # The same key for another request is refused, not replayed.
    line = refused(
        cli("credits", "grant", user.email, "13", "--reason", "top-up", "--idempotency-key", key)
    )
    assert "different request" in line
    assert balance(api, user)["balance"] == "12.5"


def test_deduct_and_show(cli: Cli, api: httpx.Client, make_user: Callable[..., User]) -> None:
    user = make_user("10")
    out = ok(cli("credits", "deduct", user.email, "2.5", "--reason", "correction"))
    assert "deducted 2.5 credits" in out
    assert balance(api, user)["balance"] == "7.5"
    line = refused(cli("credits", "deduct", user.email, "8", "--reason", "too much"))
    assert "may not exceed the available balance" in line
    assert balance(api, user)["balance"] == "7.5"

    shown = json.loads(ok(cli("credits", "show", user.email, "--json")))
    assert shown == {"email": user.email, "balance": "7.5", "held": "0", "available": "7.5"}
    assert "available: 7.5" in ok(cli("credits", "show", user.email))


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("-5", "AMOUNT must be a positive number of credits, not -5"),
        ("0", "AMOUNT must be a positive number of credits, not 0"),
        ("1.0000001", "AMOUNT: 1.0000001 has more than 6 decimal places"),
        ("ten", "AMOUNT: 'ten' is not a decimal number"),
    ],
)
@pytest.mark.parametrize("command", ["grant", "deduct"])
def test_bad_amounts_change_nothing(
    cli: Cli,
    api: httpx.Client,
    admin_headers: dict[str, str],
    make_user: Callable[..., User],
    command: str,
    amount: str,
    message: str,
) -> None:
    user = make_user("5")
    before = len(ledger(api, admin_headers, user))
    line = refused(cli("credits", command, user.email, amount, "--reason", "x"))
    assert line == f"error: {message}"
    assert balance(api, user)["balance"] == "5"
    assert len(ledger(api, admin_headers, user)) == before


@pytest.mark.parametrize("amount", ["1e3", " 5", "5 ", "+5", "1_000", "Infinity"])
def test_the_cli_refuses_the_amounts_the_api_refuses(
    cli: Cli,
    api: httpx.Client,
    admin_headers: dict[str, str],
    make_user: Callable[..., User],
    amount: str,
) -> None:
    """One parser for both: what the API answers 422 to, the CLI refuses in one line."""
    user = make_user("5")
    by_api = api.post(
        f"/v1/admin/users/{user.id}/credits",
        json={"amount": amount, "reason": "x"},
        headers={**admin_headers, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert by_api.status_code == 422, by_api.text
    line = refused(cli("credits", "grant", user.email, amount, "--reason", "x"))
    assert line.startswith("error: AMOUNT")
    assert balance(api, user)["balance"] == "5"


def test_an_unknown_email_is_one_line(cli: Cli) -> None:
    email = f"nobody-{uuid.uuid4().hex[:8]}@example.com"
    for args in (
        ["credits", "grant", email, "1", "--reason", "x"],
        ["credits", "show", email],
        ["credits", "ledger", email],
        ["users", "show", email],
        ["users", "disable", email],
        ["keys", "list", email],
    ):
        assert refused(cli(*args)) == f"error: no account with email {email}"


def test_the_ledger_lists_entries_newest_first(cli: Cli, make_user: Callable[..., User]) -> None:
    user = make_user("3")
    ok(cli("credits", "grant", user.email, "4", "--reason", "second"))
    entries = json.loads(ok(cli("credits", "ledger", user.email, "--json")))
    assert [(e["amount"], e["reason"]) for e in entries[:2]] == [
        ("4", "second"),
        ("3", "test grant"),
    ]
    table = ok(cli("credits", "ledger", user.email, "--limit", "1"))
    assert table.splitlines()[0].split() == [
        "ID",
        "TIME",
        "KIND",
        "AMOUNT",
        "HELD",
        "BALANCE",
        "REASON",
    ]
    assert len(table.splitlines()) == 2


# --- users -----------------------------------------------------------------------------------


def test_users_create_change_role_disable_and_enable(
    cli: Cli, api: httpx.Client, admin_headers: dict[str, str]
) -> None:
    email = f"{_name('ops')}@example.com"
    created = json.loads(
        ok(
            cli(
                "users",
                "create",
                email,
                "--admin",
                "--password-stdin",
                "--json",
                input=PASSWORD + "\n",
            )
        )
    )
    assert created["role"] == "admin"

    def account() -> dict[str, Any]:
        response = api.get(f"/v1/admin/users/{created['id']}", headers=admin_headers)
        assert response.status_code == 200, response.text
        return dict(response.json())

    assert account()["email"] == email and account()["role"] == "admin"
    login = api.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200, "the password read from stdin must work"

    assert f"{email} is now client" in ok(cli("users", "set-role", email, "client"))
    assert account()["role"] == "client"
    ok(cli("users", "disable", email))
    assert account()["disabled"] is True
    ok(cli("users", "enable", email))
    assert account()["disabled"] is False

    line = refused(cli("users", "create", email.upper(), "--password-stdin", input=PASSWORD + "\n"))
    assert line == "error: an account with this email exists"

    shown = json.loads(ok(cli("users", "show", email, "--json")))
    assert (shown["id"], shown["role"], shown["balance"]) == (created["id"], "client", "0")
    listed = json.loads(ok(cli("users", "list", "--email", email, "--json")))
    assert [a["email"] for a in listed] == [email]


def test_users_create_asks_for_the_password_twice(
    cli: Cli, api: httpx.Client, admin_headers: dict[str, str]
) -> None:
    email = f"{_name('asked')}@example.com"
    result = cli("users", "create", email, input=f"{PASSWORD}\n{PASSWORD}\n")
    out = ok(result)
    assert PASSWORD not in result.output, "a hidden prompt must not echo the password"
    assert f"created {email} (client" in out
    listed = api.get("/v1/admin/users", params={"email": email}, headers=admin_headers).json()
    assert [a["email"] for a in listed["data"]] == [email]


def test_users_create_refuses_bad_input(cli: Cli) -> None:
    assert "email" in refused(
        cli("users", "create", "not-an-email", "--password-stdin", input=PASSWORD + "\n")
    )
    line = refused(
        cli("users", "create", f"{_name()}@example.com", "--password-stdin", input="short\n")
    )
    assert line.startswith("error: password: ")


def test_users_list_is_a_table(cli: Cli, make_user: Callable[..., User]) -> None:
    user = make_user("1.5")
    lines = ok(cli("users", "list", "--email", user.email)).splitlines()
    assert lines[0].split()[:4] == ["EMAIL", "ROLE", "DISABLED", "BALANCE"]
    assert lines[1].split()[:4] == [user.email, "client", "no", "1.5"]


# --- models ----------------------------------------------------------------------------------


def _add(cli: Cli, name: str, *extra: str) -> Result:
    return cli(
        "models",
        "add",
        name,
        "--provider",
        "openai",
        "--upstream-model",
        "fake",
        "--input-price",
        "10",
        "--output-price",
        "20",
        "--context-window",
        "1000",
        "--max-output-tokens",
        "100",
        *extra,
    )


def test_models_add_set_price_enable_and_disable(
    cli: Cli, api: httpx.Client, admin_headers: dict[str, str]
) -> None:
    name = _name()
    assert f"added {name} (enabled)" in ok(_add(cli, name))
    model = admin_models(api, admin_headers)[name]
    assert (model["input_price"], model["output_price"], model["enabled"]) == ("10", "20", True)
    assert model["default_max_tokens"] == 100

    ok(cli("models", "set-price", name, "--input-price", "11.5", "--output-price", "21"))
    model = admin_models(api, admin_headers)[name]
    assert (model["input_price"], model["output_price"]) == ("11.5", "21")
    ok(cli("models", "set-price", name, "--output-price", "22"))
    model = admin_models(api, admin_headers)[name]
    assert (model["input_price"], model["output_price"]) == ("11.5", "22")

    disabled = json.loads(ok(cli("models", "disable", name, "--json")))
    assert (disabled["name"], disabled["enabled"]) == (name, False)
    assert admin_models(api, admin_headers)[name]["enabled"] is False
    ok(cli("models", "enable", name))
    assert admin_models(api, admin_headers)[name]["enabled"] is True

    listed = {m["name"]: m for m in json.loads(ok(cli("models", "list", "--json")))}
    assert listed[name]["input_price"] == "11.5"
    assert name in ok(cli("models", "list"))


def test_a_running_server_sees_cli_changes_on_its_next_requests(
    cli: Cli, api: httpx.Client, make_user: Callable[..., User]
) -> None:
    user = make_user()
    name = _name()

    def served() -> dict[str, Any]:
        cards = api.get("/v1/models", headers=user.headers).json()["data"]
        return {card["id"]: card for card in cards}

    def eventually(check: Callable[[dict[str, Any]], bool]) -> None:
        # The catalogue cache reloads on the NOTIFY of the CLI's commit, a moment later.
        deadline = time.monotonic() + 5
        while not check(served()):
            assert time.monotonic() < deadline, "the server kept its stale catalogue"
            time.sleep(0.05)

    ok(_add(cli, name))
    eventually(lambda models: name in models)
    ok(cli("models", "set-price", name, "--input-price", "12"))
    eventually(lambda models: models[name]["pricing"]["input"] == "12")
    ok(cli("models", "disable", name))
    eventually(lambda models: name not in models)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--input-price", "-1"], "prices cannot be negative"),
        (["--output-price", "0"], "a price of zero needs the model to be marked free"),
        (["--input-price", "0.0000001"], "input_price: 0.0000001 has more than 6 decimal places"),
        (["--context-window", "0"], "context_window: Input should be greater than 0"),
        (
            ["--max-output-tokens", "10", "--default-max-tokens", "20"],
            "default_max_tokens exceeds max_output_tokens",
        ),
    ],
)
def test_bad_models_are_refused_and_not_added(
    cli: Cli, api: httpx.Client, admin_headers: dict[str, str], extra: list[str], message: str
) -> None:
    name = _name()
    assert message in refused(_add(cli, name, *extra))
    assert name not in admin_models(api, admin_headers)


def test_a_bad_price_change_changes_nothing(
    cli: Cli, api: httpx.Client, admin_headers: dict[str, str]
) -> None:
    name = _name()
    ok(_add(cli, name))
    assert "prices cannot be negative" in refused(
        cli("models", "set-price", name, "--input-price", "-3")
    )
    assert "more than 6 decimal places" in refused(
        cli("models", "set-price", name, "--output-price", "1.1234567")
    )
    assert refused(cli("models", "set-price", name)) == (
        "error: give --input-price, --output-price or both"
    )
    model = admin_models(api, admin_headers)[name]
    assert (model["input_price"], model["output_price"]) == ("10", "20")
    assert refused(cli("models", "enable", "no-such-model")) == (
        "error: no model named no-such-model (see `tollgate models list`)"
    )
    assert "exists" in refused(_add(cli, name))


def test_models_import_is_idempotent(
    cli: Cli, api: httpx.Client, admin_headers: dict[str, str], tmp_path: Path
) -> None:
    first, second = _name("imp"), _name("imp")
    catalogue = tmp_path / "catalogue.yaml"
    catalogue.write_text(
        f"""\
- name: {first}
  provider: openai
  upstream_model: fake
  context_window: 1000
  max_output_tokens: 100
  input_price: 0.15
  output_price: 0.6
- name: {second}
  provider: gemini
  upstream_model: fake-gemini
  context_window: 2000
  max_output_tokens: 200
  default_max_tokens: 50
  input_price: 1.25
  output_price: 10
"""
    )
    out = ok(cli("models", "import", str(catalogue)))
    assert out.splitlines()[-1] == "2 created, 0 updated, 0 unchanged"
    models = admin_models(api, admin_headers)
    assert (models[first]["input_price"], models[first]["output_price"]) == ("0.15", "0.6")
    assert models[second]["default_max_tokens"] == 50
    effective = models[first]["price_effective_from"]

    again = json.loads(ok(cli("models", "import", str(catalogue), "--json")))
    assert (again["created"], again["updated"], again["unchanged"]) == (0, 0, 2)
    assert admin_models(api, admin_headers)[first]["price_effective_from"] == effective

    # An operator disables one; the file does not name `enabled`, so it stays disabled. A new
    # price in the file is the only change.
    ok(cli("models", "disable", first))
    catalogue.write_text(catalogue.read_text().replace("input_price: 0.15", "input_price: 0.2"))
    out = ok(cli("models", "import", str(catalogue)))
    assert f"updated {first} (input_price, output_price)" in out
    assert out.splitlines()[-1] == "0 created, 1 updated, 1 unchanged"
    model = admin_models(api, admin_headers)[first]
    assert (model["input_price"], model["enabled"]) == ("0.2", False)


def test_models_import_and_add_give_the_same_defaults(
    cli: Cli, api: httpx.Client, admin_headers: dict[str, str], tmp_path: Path
) -> None:
    """A catalogue entry without `context_window` and `max_output_tokens` gets what
    `models add` gives; an existing model keeps its own when the file does not name them."""
    imported, added = _name("imp"), _name("add")
    catalogue = tmp_path / "catalogue.yaml"
    catalogue.write_text(
        f"- name: {imported}\n  provider: openai\n  upstream_model: fake\n"
        "  input_price: 0.15\n  output_price: 0.6\n"
    )
    ok(cli("models", "import", str(catalogue)))
    ok(
        cli(
            "models", "add", added, "--provider", "openai", "--upstream-model", "fake",
            "--input-price", "0.15", "--output-price", "0.6",
        )
    )  # fmt: skip
    models = admin_models(api, admin_headers)
    limits = ("context_window", "max_output_tokens", "default_max_tokens")
    assert [models[imported][f] for f in limits] == [models[added][f] for f in limits]
    assert models[imported]["context_window"] == 128_000

    ok(cli("models", "set-price", imported, "--input-price", "0.2"))
    changed = api.patch(
        f"/v1/admin/models/{imported}", json={"context_window": 5000}, headers=admin_headers
    )
    assert changed.status_code == 200, changed.text
    out = ok(cli("models", "import", str(catalogue)))
    assert admin_models(api, admin_headers)[imported]["context_window"] == 5000, out


def test_a_bad_catalogue_file_writes_nothing(
    cli: Cli, api: httpx.Client, admin_headers: dict[str, str], tmp_path: Path
) -> None:
    good, bad = _name("imp"), _name("imp")
    entries = [
        {
            "name": good,
            "provider": "openai",
            "upstream_model": "u",
            "context_window": 10,
            "max_output_tokens": 5,
            "input_price": "1",
            "output_price": "2",
        },
        {
            "name": bad,
            "provider": "openai",
            "upstream_model": "u",
            "context_window": 10,
            "max_output_tokens": 5,
            "input_price": "1.00000001",
            "output_price": "2",
        },
    ]
    catalogue = tmp_path / "catalogue.json"
    catalogue.write_text(json.dumps(entries))
    line = refused(cli("models", "import", str(catalogue)))
    assert f"entry 2 ({bad}): input_price:" in line
    models = admin_models(api, admin_headers)
    assert good not in models and bad not in models


# --- keys ------------------------------------------------------------------------------------


def test_a_key_made_by_the_cli_works_until_revoked(
    cli: Cli, api: httpx.Client, make_user: Callable[..., User]
) -> None:
    user = make_user("3")
    out = ok(cli("keys", "create", user.email, "--name", "ci"))
    (secret,) = [line.split()[-1] for line in out.splitlines() if line.startswith("key:")]
    assert secret.startswith("tg-")
    bearer = {"Authorization": f"Bearer {secret}"}
    response = api.get("/v1/balance", headers=bearer)
    assert response.status_code == 200, response.text
    assert response.json()["balance"] == "3"

    (key,) = json.loads(ok(cli("keys", "list", user.email, "--json")))
    assert key["name"] == "ci" and key["revoked_at"] is None and "key" not in key
    assert secret not in ok(cli("keys", "list", user.email))

    assert f"revoked key {key['id']}" in ok(cli("keys", "revoke", key["id"]))
    # The server learns of a revocation made elsewhere from a NOTIFY: within moments.
    deadline = time.monotonic() + 3
    while api.get("/v1/balance", headers=bearer).status_code != 401:
        assert time.monotonic() < deadline, "the revoked key still works"
        time.sleep(0.05)
    ok(cli("keys", "revoke", key["id"]))  # again: nothing changes, still fine


def test_keys_create_with_models_and_expiry(
    cli: Cli, api: httpx.Client, make_user: Callable[..., User]
) -> None:
    user = make_user()
    created = json.loads(
        ok(
            cli(
                "keys",
                "create",
                user.email,
                "--name",
                "scoped",
                "--model",
                "gpt-4",
                "--model",
                "gemini-flash",
                "--expires-at",
                "2030-01-01T00:00:00Z",
                "--json",
            )
        )
    )
    assert created["models"] == ["gpt-4", "gemini-flash"]
    assert created["expires_at"].startswith("2030-01-01T00:00:00")
    assert (
        api.get("/v1/balance", headers={"Authorization": f"Bearer {created['key']}"}).status_code
        == 200
    )
    line = refused(cli("keys", "create", user.email, "--name", "x", "--expires-at", "2030-01-01"))
    assert "time zone" in line
    assert "is not an id" in refused(cli("keys", "revoke", "nope"))
    missing = str(uuid.uuid4())
    assert refused(cli("keys", "revoke", missing)) == f"error: no key with id {missing}"


def test_keys_limits_from_the_cli(
    cli: Cli, api: httpx.Client, make_user: Callable[..., User], test_models: dict[str, str]
) -> None:
    user = make_user("100")
    created = json.loads(
        ok(
            cli(
                "keys", "create", user.email, "--name", "capped", "--spend-limit", "25",
                "--spend-period", "month", "--rpm", "60", "--json",
            )
        )
    )  # fmt: skip
    assert (created["spend_limit"], created["spend_period"], created["rpm"]) == ("25", "month", 60)
    out = ok(cli("keys", "limit", created["id"], "--spend-limit", "0.5", "--rpm", "none"))
    assert "limit 0.5 credits per month, rpm -" in out
    refused_answer = api.post(
        "/v1/chat/completions",
        headers={"Authorization": f"Bearer {created['key']}"},
        json={"model": test_models["openai"], "messages": [{"role": "user", "content": "hi"}]},
    )
    assert refused_answer.json()["error"]["code"] == "key_budget_exceeded"
    (key,) = json.loads(ok(cli("keys", "list", user.email, "--json")))
    assert (key["spend_limit"], key["rpm"], key["spend"]) == ("0.5", None, "0")
    assert "spend_limit" in refused(cli("keys", "limit", created["id"], "--spend-limit", "0"))
    assert "--rpm" in refused(cli("keys", "limit", created["id"], "--rpm", "many"))
    assert "at least one" in refused(cli("keys", "limit", created["id"]))


# --- database and providers ------------------------------------------------------------------


def test_without_a_database_only_db_upgrade_creates_the_embedded_one(tmp_path: Path) -> None:
    """Another HOME (or TOLLGATE_DATA_DIR) with no database in it: a command refuses in one
    line and creates nothing; `db upgrade` creates it; then every command names it."""
    data = tmp_path / "elsewhere"
    runner = CliRunner(env={"TOLLGATE_DATA_DIR": str(data), "TOLLGATE_DATABASE_URL": None})
    for args in (["credits", "show", "ada@example.com"], ["users", "list"], ["db", "current"]):
        line = refused(runner.invoke(app, args))
        assert line.startswith("error: no database: TOLLGATE_DATABASE_URL is unset"), line
        assert str(data) in line
    assert not (data / "postgres").exists()

    upgraded = runner.invoke(app, ["db", "upgrade"])
    assert upgraded.exit_code == 0, upgraded.output
    assert (data / "postgres").is_dir()
    listed = runner.invoke(app, ["users", "list"])
    assert listed.exit_code == 0, listed.output
    assert f"database: the embedded one in {data}" in listed.stderr


def test_db_check_current_and_history(cli: Cli) -> None:
    out = ok(cli("db", "check"))
    assert "BROKEN" not in out
    report = json.loads(ok(cli("db", "check", "--json")))
    assert report["ok"] is True and report["violations"] == {}
    state = json.loads(ok(cli("db", "current", "--json")))
    assert state["at_head"] is True and state["current"] == state["head"]
    assert "up to date" in ok(cli("db", "current"))
    history = json.loads(ok(cli("db", "history", "--json")))
    assert history[0]["revision"] == state["head"] and history[0]["head"] is True
    assert "schema is at the newest migration" in ok(cli("db", "upgrade"))


def test_providers_list_never_prints_a_key(cli: Cli) -> None:
    secret = "sk-cli-test-" + uuid.uuid4().hex
    env = {"OPENAI_API_KEY": secret, "ANTHROPIC_API_KEY": secret + "-a"}
    out = ok(cli("providers", "list", env=env))
    assert secret not in out
    assert any(
        line.split()[:2] == ["openai", "openai"] and line.split()[-1] == "set"
        for line in out.splitlines()
    )
    data = json.loads(ok(cli("providers", "list", "--json", env=env)))
    assert secret not in json.dumps(data)


def test_an_unreachable_database_is_one_line(cli: Cli) -> None:
    env = {"TOLLGATE_DATABASE_URL": "postgresql+asyncpg://postgres@127.0.0.1:1/nope"}
    for args in (["users", "list"], ["db", "current"], ["db", "check"], ["db", "upgrade"]):
        line = refused(cli(*args, env=env))
        assert "cannot reach the database" in line


def test_every_command_has_help_with_an_example(cli: Cli) -> None:
    groups = {
        "db": ["upgrade", "current", "history", "check"],
        "users": ["create", "list", "show", "set-role", "disable", "enable"],
        "credits": ["show", "grant", "deduct", "ledger"],
        "models": ["list", "add", "set-price", "enable", "disable", "import"],
        "keys": ["create", "list", "limit", "revoke"],
        "providers": ["list"],
    }
    for group, commands in groups.items():
        for command in commands:
            out = ok(cli(group, command, "--help"))
            assert f"Example: tollgate {group} {command}" in out or (
                f"tollgate {group} {command}" in out and "Example:" in out
            ), f"{group} {command} --help has no example"


def test_a_price_set_with_the_cli_is_charged_on_the_next_generation(
    database_url: str,
    api: httpx.Client,
    make_user: Callable[..., User],
    admin_headers: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from decimal import Decimal

    from tollgate_cli.main import app
    from typer.testing import CliRunner

    name = f"cli-priced-{uuid.uuid4().hex[:6]}"
    monkeypatch.setenv("TOLLGATE_DATABASE_URL", database_url)
    runner = CliRunner()
    added = runner.invoke(
        app,
        [
            "models",
            "add",
            name,
            "--provider",
            "openai",
            "--upstream-model",
            "x",
            "--input-price",
            "1000000",
            "--output-price",
            "1000000",
            "--context-window",
            "4000",
            "--max-output-tokens",
            "100",
        ],
    )
    assert added.exit_code == 0, added.output
    repriced = runner.invoke(
        app, ["models", "set-price", name, "--input-price", "3000000", "--output-price", "5000000"]
    )
    assert repriced.exit_code == 0, repriced.output
    user = make_user(credits=1000)
    response = api.post(
        "/v1/chat/completions",
        headers=user.headers,
        json={"model": name, "messages": [{"role": "user", "content": "hello there"}]},
    )
    assert response.status_code == 200, response.text
    # 4 input tokens at 3 credits and 5 output tokens at 5 credits: the CLI's new price.
    assert Decimal(response.json()["usage"]["cost"]) == 4 * 3 + 5 * 5


def test_db_check_reports_a_generation_that_raised_a_balance_and_a_charge_above_its_hold(
    database_url: str, tmp_path: Path
) -> None:
    """The two broken rules written into a scratch database as the old bugs left them: a
    negative prompt count settled as a credit, and a charge larger than its hold."""
    from support import asyncpg_dsn, execute_sql, fresh_database

    with fresh_database(database_url, prefix="tollgate_broken") as url:
        sql = """
        INSERT INTO accounts (id, email, password_hash, balance, held)
        VALUES ('00000000-0000-0000-0000-000000000001', 'x@example.com', 'x', 0, 0);
        INSERT INTO models (id, name, provider, upstream_model, context_window,
                            max_output_tokens, default_max_tokens)
        VALUES (1, 'm', 'openai', 'm', 1000, 100, 10);
        INSERT INTO generations (id, account_id, model_id, model_name, input_price,
            output_price, hold, stream, max_tokens, prompt_tokens_estimate, status, cost,
            deadline_at, settled_at)
        VALUES ('00000000-0000-0000-0000-00000000000a', '00000000-0000-0000-0000-000000000001',
                1, 'm', 1, 1, 50, false, 10, 5, 'completed', -200, now(), now()),
               ('00000000-0000-0000-0000-00000000000b', '00000000-0000-0000-0000-000000000001',
                1, 'm', 1, 1, 50, false, 10, 5, 'completed', 80, now(), now());
        INSERT INTO ledger_entries (account_id, kind, amount, held_delta, balance_after,
                                    held_after, generation_id)
        VALUES ('00000000-0000-0000-0000-000000000001', 'hold', 0, 50, 0, 50,
                '00000000-0000-0000-0000-00000000000a'),
               ('00000000-0000-0000-0000-000000000001', 'charge', 200, -50, 200, 0,
                '00000000-0000-0000-0000-00000000000a'),
               ('00000000-0000-0000-0000-000000000001', 'hold', 0, 50, 200, 50,
                '00000000-0000-0000-0000-00000000000b'),
               ('00000000-0000-0000-0000-000000000001', 'charge', -80, -50, 120, 0,
                '00000000-0000-0000-0000-00000000000b');
        UPDATE accounts SET balance = 120 WHERE id = '00000000-0000-0000-0000-000000000001';
        """
        import asyncio

        asyncio.run(execute_sql(asyncpg_dsn(url), sql))
        runner = CliRunner(
            env={
                "TOLLGATE_DATABASE_URL": url,
                "TOLLGATE_JWT_SECRET": JWT_SECRET,
                "TOLLGATE_DATA_DIR": str(tmp_path / "data"),
            }
        )
        result = runner.invoke(app, ["db", "check", "--json"])
    assert result.exit_code == 1, result.output
    assert "2 ledger rule(s) broken" in result.output
    violations = json.loads(result.stdout)["violations"]
    raised = violations["no generation raised a balance"]
    assert {row[0] for row in raised} == {"00000000-0000-0000-0000-00000000000a"}
    above = violations["no charge above its generation's hold"]
    assert {row[0] for row in above} == {"00000000-0000-0000-0000-00000000000b"}
