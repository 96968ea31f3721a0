"""What the server does once, before it accepts requests."""

from __future__ import annotations

import asyncio
import logging

from tollgate_server.runtime import Runtime

logger = logging.getLogger("tollgate.startup")


async def on_startup(runtime: Runtime) -> None:
    """Seed the catalogue on first start, create the configured admin, start the sweeper."""
    from tollgate_server.services import accounts, allowances, models, sweeper, webhooks

    async with runtime.sessions() as session:
        await models.seed_default_catalogue(session=session)
        settings = runtime.settings
        if settings.admin_email and settings.admin_password:
            await accounts.ensure_admin(
                session=session,
                email=settings.admin_email,
                password=settings.admin_password.get_secret_value(),
                settings=settings,
            )
    runtime.catalogue.invalidate()
    # Registered before anything runs: the sweepers of every process treat generations of an
    # unregistered or silent instance as orphans.
    await sweeper.register_instance(runtime)
    runtime.background.append(asyncio.create_task(sweeper.run_heartbeat(runtime), name="heartbeat"))
    # Holds left by a process that died are released before new traffic arrives.
    await sweeper.sweep_once(runtime)
    runtime.background.append(asyncio.create_task(sweeper.run_sweeper(runtime), name="sweeper"))
    # Periodic allowances are issued by every process (each period once, whoever is first).
    runtime.background.append(
        asyncio.create_task(allowances.run_allowances(runtime), name="allowances")
    )
    if settings.webhook_deliver:
        runtime.background.append(
            asyncio.create_task(webhooks.run_webhooks(runtime), name="webhooks")
        )
