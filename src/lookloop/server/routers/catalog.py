"""Catalogue CRUD."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

from fastapi import APIRouter, Depends, Response

from lookloop.errors import Conflict
from lookloop.server.auth import Principal, require
from lookloop.server.deps import get_system
from lookloop.server.schemas import CatalogItemIn, CatalogItemOut, ErrorOut
from lookloop.system import Lookloop

router = APIRouter(prefix="/v1/catalog", tags=["catalog"])
System = Annotated[Lookloop, Depends(get_system)]
Operator = Annotated[Principal, Depends(require("operator"))]
_ERRORS: dict[int | str, dict[str, object]] = {code: {"model": ErrorOut} for code in (401, 403, 404, 409, 422)}


@router.get("", response_model=list[CatalogItemOut])
def list_items(system: System, q: str | None = None) -> list[CatalogItemOut]:
    items = system.list_items()
    if q:
        needle = q.lower()
        items = [i for i in items if needle in i.name.lower() or needle in i.coarse_class.lower()]
    return [CatalogItemOut.of(i) for i in items]


@router.get("/{item_id}", response_model=CatalogItemOut, responses=_ERRORS)
def get_item(system: System, item_id: str) -> CatalogItemOut:
    return CatalogItemOut.of(system.get_item(item_id))


@router.post("", response_model=CatalogItemOut, status_code=201, responses=_ERRORS)
def create_item(system: System, _: Operator, body: CatalogItemIn) -> CatalogItemOut:
    item = body.to_item()
    if any(i.id == item.id for i in system.list_items()):
        raise Conflict(f"catalogue item {item.id!r} exists; use PUT to change it")
    system.upsert_items([item])
    return CatalogItemOut.of(system.get_item(item.id))


@router.put("/{item_id}", response_model=CatalogItemOut, responses=_ERRORS)
def put_item(system: System, _: Operator, item_id: str, body: CatalogItemIn) -> CatalogItemOut:
    existing = next((i for i in system.list_items() if i.id == item_id), None)
    item = body.to_item(item_id)
    if existing is not None:

        item = replace(item, images=existing.images)
    system.upsert_items([item])
    return CatalogItemOut.of(system.get_item(item_id))


@router.delete("/{item_id}", status_code=204, responses=_ERRORS)
def delete_item(system: System, _: Operator, item_id: str) -> Response:
    system.delete_item(item_id)
    return Response(status_code=204)
