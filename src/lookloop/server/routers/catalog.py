"""Catalogue CRUD."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from lookloop.server.auth import Principal
from lookloop.server.deps import get_system
from lookloop.server.policies import require
from lookloop.server.schemas.catalog import CatalogItemIn, CatalogItemOut
from lookloop.server.schemas.errors import error_responses
from lookloop.system import Lookloop

router = APIRouter(prefix="/v1/catalog", tags=["catalog"])
System = Annotated[Lookloop, Depends(get_system)]
Operator = Annotated[Principal, Depends(require("operator"))]
_ERRORS = error_responses(401, 403, 404, 409, 422)


@router.get("", response_model=list[CatalogItemOut])
def list_items(system: System, q: str | None = None) -> list[CatalogItemOut]:
    return [CatalogItemOut.of(i) for i in system.catalogue.search(q)]


@router.get("/{item_id}", response_model=CatalogItemOut, responses=_ERRORS)
def get_item(system: System, item_id: str) -> CatalogItemOut:
    return CatalogItemOut.of(system.get_item(item_id))


@router.post("", response_model=CatalogItemOut, status_code=201, responses=_ERRORS)
def create_item(system: System, _: Operator, body: CatalogItemIn) -> CatalogItemOut:
    return CatalogItemOut.of(system.catalogue.create(body.to_item()))


@router.put("/{item_id}", response_model=CatalogItemOut, responses=_ERRORS)
def put_item(system: System, _: Operator, item_id: str, body: CatalogItemIn) -> CatalogItemOut:
    return CatalogItemOut.of(system.catalogue.put(body.to_item(item_id)))


@router.delete("/{item_id}", status_code=204, responses=_ERRORS)
def delete_item(system: System, _: Operator, item_id: str) -> Response:
    system.delete_item(item_id)
    return Response(status_code=204)
