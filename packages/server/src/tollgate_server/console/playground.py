"""The playground: pick a model, stream an answer, stop it.

The page's script gets a short-lived access token from `POST /console/api/token` (the session
cookie and the CSRF header) and calls `POST /v1/chat/completions` with it, so a playground
generation takes the same path, and is billed the same way, as any other.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from tollgate_server.api.deps import RuntimeDep, SessionDep
from tollgate_server.console.render import esc, join, notice, page
from tollgate_server.console.session import ViewerDep
from tollgate_server.security.tokens import issue_token
from tollgate_server.services import models

router = APIRouter(prefix="/console", include_in_schema=False)


@router.get("/playground")
async def playground(user: ViewerDep, session: SessionDep, runtime: RuntimeDep) -> Response:
    usable = [
        m
        for m in await models.list_models(session=session)
        if models.model_public(m, configured=runtime.router.serves(m))["available"]
    ]
    if not usable:
        refusal = notice("No model can be used right now; ask an admin to add one.", error=True)
        return page(title="Playground", body=refusal, user=user, active="playground")
    options = join(f'<option value="{esc(m.name)}">{esc(m.name)}</option>' for m in usable)
    body = (
        '<form id="playground" class="card">'
        f'<label for="pg-model">Model</label><select id="pg-model" name="model">{options}</select>'
        '<label for="pg-prompt">Prompt</label>'
        '<textarea id="pg-prompt" name="prompt" rows="4" required></textarea>'
        '<div class="actions"><button type="submit" id="pg-send">Send</button>'
        '<button type="button" id="pg-stop" class="danger" disabled>Stop</button></div></form>'
        '<section class="card" aria-labelledby="pg-answer-heading">'
        '<h2 id="pg-answer-heading">Answer</h2>'
        '<output id="pg-answer" for="pg-prompt" aria-live="polite"></output>'
        '<p id="pg-status" role="status"></p>'
        '<p id="pg-link" class="hidden"></p></section>'
    )
    return page(title="Playground", body=body, user=user, active="playground")


@router.post("/api/token")
async def playground_token(user: ViewerDep, runtime: RuntimeDep) -> dict[str, Any]:
    """A short-lived access token for the playground's script (session + CSRF header)."""
    token, claims = issue_token(
        settings=runtime.settings,
        secret=runtime.jwt_secret,
        subject=user.account_id,
        token_type="access",
    )
    return {"access_token": token, "expires_at": claims.expires_at}
