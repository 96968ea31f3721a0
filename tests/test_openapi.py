"""The OpenAPI document the server publishes: valid OpenAPI 3.1, complete, and honest.

Complete: every operation has a summary, a description, one known tag, typed bodies with
examples, and documents each failure it can answer with the error envelope. Honest: the
credentials each operation declares are the ones it accepts, and the examples match their
schemas. Swagger UI and ReDoc are served from the server's own assets.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from conftest import User
from jsonschema import Draft202012Validator
from openapi_spec_validator import OpenAPIV31SpecValidator, validate

pytestmark = pytest.mark.postgres

TAGS = ["generation", "auth", "billing", "keys", "admin", "health"]
API_KEY_OPERATIONS = {
    ("get", "/v1/models"),
    ("post", "/v1/chat/completions"),
    ("post", "/v1/embeddings"),
    ("get", "/v1/balance"),
    ("get", "/v1/generations"),
    ("get", "/v1/generations/{generation_id}"),
}
ANTHROPIC_OPERATIONS = {("post", "/v1/messages"), ("post", "/v1/messages/count_tokens")}
"""Anthropic's Messages API: its envelope, its x-api-key, and a 400 (not a 422) for bad input."""
PUBLIC_OPERATIONS = {
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("post", "/v1/auth/register"),
    ("post", "/v1/auth/login"),
    ("post", "/v1/auth/token"),
    ("post", "/v1/auth/refresh"),
    ("post", "/v1/auth/logout"),
}
ENVELOPES = {
    "#/components/schemas/ErrorEnvelope",
    "#/components/schemas/ValidationErrorEnvelope",
    "#/components/schemas/AnthropicErrorEnvelope",
}


@pytest.fixture(scope="module")
def document(server: Any) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/openapi.json", timeout=30)
    assert response.status_code == 200
    spec: dict[str, Any] = response.json()
    return spec


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, items in document["paths"].items():
        for method, operation in items.items():
            yield method, path, operation


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].removeprefix("#/components/schemas/")
        schema = document["components"]["schemas"][name]
    return schema


def validator_for(document: dict[str, Any], schema: dict[str, Any]) -> Draft202012Validator:
    """A validator of `schema` whose `#/components/...` references resolve in the document."""
    return Draft202012Validator({**schema, "components": document["components"]})


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1.")
    validate(document, cls=OpenAPIV31SpecValidator)


def test_every_operation_has_a_summary_a_description_and_one_known_tag(
    document: dict[str, Any],
) -> None:
    assert [tag["name"] for tag in document["tags"]] == TAGS
    assert all(tag["description"] for tag in document["tags"])
    ids = []
    for method, path, operation in operations(document):
        where = f"{method.upper()} {path}"
        assert operation.get("summary"), where
        assert len(operation.get("description", "")) > 20, where
        assert len(operation["tags"]) == 1 and operation["tags"][0] in TAGS, where
        ids.append(operation["operationId"])
    assert len(ids) == len(set(ids)), "operation ids must be unique"
    assert {tag for _, _, op in operations(document) for tag in op["tags"]} == set(TAGS)


def test_every_failure_is_documented_with_the_envelope_and_an_example(
    document: dict[str, Any],
) -> None:
    """The rules: 401 behind authentication; 413 and 422 where there is a body; 422 wherever
    there is input, and only there; 503 wherever the database is read (everything but
    /healthz); and every 4xx/5xx answer is the envelope, with an example of it."""
    assert "HTTPValidationError" not in document["components"]["schemas"]
    for method, path, operation in operations(document):
        where = f"{method.upper()} {path}"
        responses = operation["responses"]
        statuses = {int(status) for status in responses}
        if operation.get("security"):
            assert 401 in statuses, where
        else:
            assert (method, path) in PUBLIC_OPERATIONS, f"{where} declares no credentials"
        if "requestBody" in operation:
            assert {413, 400 if (method, path) in ANTHROPIC_OPERATIONS else 422} <= statuses, where
        takes_input = "requestBody" in operation or operation.get("parameters")
        if (method, path) in ANTHROPIC_OPERATIONS:
            assert 422 not in statuses and 400 in statuses, where
        else:
            assert (422 in statuses) == bool(takes_input), where
        assert (503 in statuses) == (path != "/healthz"), where
        for status, response in responses.items():
            if int(status) < 400:
                continue
            content = response["content"]["application/json"]
            assert content["schema"]["$ref"] in ENVELOPES, f"{where} {status}"
            example = content["example"]
            errors = list(validator_for(document, content["schema"]).iter_errors(example))
            assert errors == [], f"{where} {status}: {errors}"
            assert re.fullmatch(r"[a-z_]+", example["error"]["code"]), f"{where} {status}"
            assert response["description"], f"{where} {status}"
            assert response["headers"]["X-Request-Id"]["required"] is True


def test_request_bodies_are_typed_and_have_examples(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        if "requestBody" not in operation:
            continue
        for media_type, content in operation["requestBody"]["content"].items():
            where = f"{method.upper()} {path} {media_type}"
            assert content["schema"]["$ref"].startswith("#/components/schemas/"), where
            schema = resolve(document, content["schema"])
            if "examples" in schema:
                continue
            required = schema.get("required", [])
            missing = [name for name in required if "examples" not in schema["properties"][name]]
            assert required and missing == [], f"{where}: no example for {missing}"


def test_every_schema_property_and_parameter_is_described(document: dict[str, Any]) -> None:
    """Swagger UI and ReDoc show these descriptions (a model's docstring, a field's
    `description`): one left out is a field a client must guess. None is exempt: FastAPI's own
    HTTPValidationError, whose text we could not set, never appears, as every operation
    documents its 422 with ValidationErrorEnvelope."""
    undescribed = []
    for name, schema in document["components"]["schemas"].items():
        if not schema.get("description"):
            undescribed.append(name)
        for field, field_schema in schema.get("properties", {}).items():
            if not field_schema.get("description"):
                undescribed.append(f"{name}.{field}")
    for method, path, operation in operations(document):
        for parameter in operation.get("parameters", []):
            if not parameter.get("description"):
                undescribed.append(f"{method.upper()} {path} {parameter['in']} {parameter['name']}")
    assert undescribed == []


def test_successful_json_responses_are_typed(document: dict[str, Any]) -> None:
    for _method, path, operation in operations(document):
        for status, response in operation["responses"].items():
            if int(status) >= 300 or "content" not in response:
                continue
            if path == "/metrics":  # Prometheus' text format, the one answer that is not JSON
                assert list(response["content"]) == ["text/plain"], path
                continue
            schema = response["content"]["application/json"]["schema"]
            assert "$ref" in schema or schema.get("items", {}).get("$ref"), f"{path} {status}"


def test_the_chat_completion_json_response_is_typed(document: dict[str, Any]) -> None:
    ok = document["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]
    schema = ok["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/ChatCompletionPublic"}
    errors = list(
        validator_for(document, schema).iter_errors(ok["content"]["application/json"]["example"])
    )
    assert errors == []


def test_the_event_stream_schema_describes_one_event(document: dict[str, Any]) -> None:
    """OpenAPI 3.1 has no `itemSchema`; validators (Schemathesis) read the `schema` of a
    `text/event-stream` as the schema of each event, `{"data": ..., "event": ...}`."""
    ok = document["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]
    schema = ok["content"]["text/event-stream"]["schema"]
    event = {"event": "message", "data": "[DONE]"}
    assert list(validator_for(document, schema).iter_errors(event)) == []


def test_every_example_matches_its_schema(document: dict[str, Any]) -> None:
    """Examples on component schemas and on their properties, and on request and response
    contents: a wrong example misleads more than none."""
    checked = 0
    for name, schema in document["components"]["schemas"].items():
        examples = [(name, schema, e) for e in schema.get("examples", [])]
        for prop, sub in schema.get("properties", {}).items():
            examples += [(f"{name}.{prop}", sub, e) for e in sub.get("examples", [])]
        for where, sub, example in examples:
            errors = [e.message for e in validator_for(document, sub).iter_errors(example)]
            assert errors == [], f"{where}: {example!r}: {errors}"
            checked += 1
    for method, path, operation in operations(document):
        contents = [operation.get("requestBody", {}).get("content", {})]
        contents += [r.get("content", {}) for r in operation["responses"].values()]
        for content in contents:
            for media_type, media in content.items():
                if "example" in media and "schema" in media and "json" in media_type:
                    errors = list(
                        validator_for(document, media["schema"]).iter_errors(media["example"])
                    )
                    assert errors == [], f"{method} {path} {media_type}: {errors}"
                    checked += 1
    assert checked > 100


def test_the_streaming_answer_is_documented_next_to_the_json_one(
    document: dict[str, Any],
) -> None:
    ok = document["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]
    stream = ok["content"]["text/event-stream"]
    events = stream["example"].split("\n\n")
    assert events[0].startswith('data: {"id":"chatcmpl-')
    assert any('"usage":' in event and '"cost":' in event for event in events)
    assert events[-2:] == ["data: [DONE]", ""]
    assert ok["content"]["application/json"]["example"]["object"] == "chat.completion"
    assert "X-Tollgate-Generation-Id" in ok["headers"]


def test_security_schemes_offer_the_login_flow_access_tokens_and_api_keys(
    document: dict[str, Any],
) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["password"]["type"] == "oauth2"
    assert schemes["password"]["flows"]["password"]["tokenUrl"] == "/v1/auth/token"
    assert schemes["bearer"] == {**schemes["bearer"], "type": "http", "scheme": "bearer"}
    assert schemes["bearer"]["bearerFormat"] == "JWT"
    assert schemes["apiKey"] == {**schemes["apiKey"], "type": "http", "scheme": "bearer"}
    for method, path, operation in operations(document):
        declared = {name for requirement in operation.get("security", []) for name in requirement}
        if (method, path) in PUBLIC_OPERATIONS:
            assert declared == set(), path
        elif (method, path) in ANTHROPIC_OPERATIONS:
            assert declared == {"password", "bearer", "apiKey", "xApiKey"}, path
        elif (method, path) in API_KEY_OPERATIONS:
            assert declared == {"password", "bearer", "apiKey"}, path
        else:
            assert declared == {"password", "bearer"}, path


def test_the_declared_credentials_are_the_accepted_ones(
    document: dict[str, Any], api: httpx.Client, make_user: Callable[..., User]
) -> None:
    """Each GET without path parameters, called with an API key: 200 where the document
    declares `apiKey`, 403 where it declares access tokens only."""
    user = make_user()
    created = api.post("/v1/keys", json={"name": "openapi"}, headers=user.headers)
    assert created.status_code == 201, created.text
    key_headers = {"Authorization": f"Bearer {created.json()['key']}"}
    called = 0
    for method, path, operation in operations(document):
        if method != "get" or "{" in path or not operation.get("security"):
            continue
        declared = {name for requirement in operation["security"] for name in requirement}
        response = api.get(path, headers=key_headers)
        assert response.status_code == (200 if "apiKey" in declared else 403), path
        called += 1
    assert called >= 8


def test_swagger_ui_and_redoc_are_served_without_the_internet(api: httpx.Client) -> None:
    for page, assets in {
        "/docs": ["swagger-ui-bundle.js", "swagger-ui.css"],
        "/redoc": ["redoc.standalone.js"],
    }.items():
        response = api.get(page)
        assert response.status_code == 200
        html = response.text
        assert "/openapi.json" in html
        # Every script, stylesheet and font comes from this server.
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", html), page
        for asset in assets:
            assert f"/docs-assets/{asset}" in html
            served = api.get(f"/docs-assets/{asset}")
            assert served.status_code == 200 and len(served.content) > 10_000, asset
