"""Sign in and out; who am I."""

from __future__ import annotations

import functools
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool

from lookloop.server.auth import Principal, bearer_token
from lookloop.server.clients import client_address
from lookloop.server.deps import get_system
from lookloop.server.policies import require
from lookloop.server.schemas.errors import error_responses
from lookloop.server.schemas.humans import LoginIn, LoginOut, MeOut
from lookloop.system import Lookloop

router = APIRouter(prefix="/v1/auth", tags=["auth"])
System = Annotated[Lookloop, Depends(get_system)]
_ERRORS = error_responses(401, 403, 422)


@router.post("/login", response_model=LoginOut, responses=error_responses(401, 403, 422, 429),
             summary="Reviewer/operator sign-in (failed tries back off per username and per address: 429)")
async def login(system: System, body: LoginIn, address: Annotated[str, Depends(client_address)]) -> LoginOut:
    # argon2 verification takes tens of milliseconds: keep it off the event loop.
    accounts = system.humans.accounts
    token, account = await run_in_threadpool(
        functools.partial(accounts.login, body.username, body.password, address=address))
    return LoginOut(token=token, role=account.role, username=account.username,
                    expires_in_s=int(accounts.session_ttl.total_seconds()))


@router.post("/logout", status_code=204, responses=_ERRORS)
def logout(system: System, request: Request,
           _: Annotated[Principal, Depends(require("reviewer", "operator"))]) -> Response:
    token = bearer_token(request)
    if token:
        system.humans.accounts.logout(token)
    return Response(status_code=204)


@router.get("/me", response_model=MeOut, responses=_ERRORS)
def me(principal: Annotated[Principal, Depends(require())]) -> MeOut:
    return MeOut.of(principal)
