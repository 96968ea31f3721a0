"""Admin routes that act on another account (`tollgate_server.api.routes.admin`)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import httpx
import pytest
from conftest import User

pytestmark = pytest.mark.postgres


def test_an_admin_lists_and_revokes_another_accounts_key(
    api: httpx.Client, admin_headers: dict[str, str], make_user: Callable[..., User]
) -> None:
    owner, other = make_user(), make_user()
    created = api.post("/v1/keys", json={"name": "leaked"}, headers=owner.headers).json()
    key_headers = {"Authorization": f"Bearer {created['key']}"}
    assert api.get("/v1/balance", headers=key_headers).status_code == 200  # now cached

    listed = api.get(f"/v1/admin/users/{owner.id}/keys", headers=admin_headers)
    assert listed.status_code == 200
    assert [k["id"] for k in listed.json()] == [created["id"]]
    assert created["key"] not in listed.text

    # The key is not the other account's: its path answers 404 and changes nothing.
    wrong = api.delete(f"/v1/admin/users/{other.id}/keys/{created['id']}", headers=admin_headers)
    assert wrong.status_code == 404
    assert wrong.json()["error"]["code"] == "not_found"
    assert api.get("/v1/balance", headers=key_headers).status_code == 200

    revoked = api.delete(f"/v1/admin/users/{owner.id}/keys/{created['id']}", headers=admin_headers)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    assert api.get("/v1/balance", headers=key_headers).status_code == 401
    again = api.delete(f"/v1/admin/users/{owner.id}/keys/{created['id']}", headers=admin_headers)
    assert again.status_code == 200


def test_only_an_admin_revokes_another_accounts_key(
    api: httpx.Client, make_user: Callable[..., User]
) -> None:
    owner, other = make_user(), make_user()
    created = api.post("/v1/keys", json={"name": "mine"}, headers=owner.headers).json()
    for headers in (other.headers, owner.headers):
        refused = api.delete(f"/v1/admin/users/{owner.id}/keys/{created['id']}", headers=headers)
        assert refused.status_code == 403
    missing = api.get(f"/v1/admin/users/{uuid.uuid4()}/keys", headers=owner.headers)
    assert missing.status_code == 403
    key_headers = {"Authorization": f"Bearer {created['key']}"}
    assert api.get("/v1/balance", headers=key_headers).status_code == 200
