"""Catalogue items in and out."""

from __future__ import annotations

from pydantic import BaseModel, Field

from lookloop.domain import CatalogItem


class CatalogItemIn(BaseModel):
    id: str | None = Field(default=None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.\-]+$")
    name: str = Field(min_length=1, max_length=256)
    coarse_class: str = Field(default="", max_length=128)
    description: str = Field(default="", max_length=10_000)
    price: float | None = Field(default=None, ge=0, le=1e9)
    currency: str = Field(default="SEK", min_length=1, max_length=8)
    barcode: str | None = Field(default=None, max_length=64)

    def to_item(self, item_id: str | None = None) -> CatalogItem:
        return CatalogItem(
            id=item_id or self.id or self.name.lower().replace(" ", "-"),
            name=self.name,
            coarse_class=self.coarse_class,
            description=self.description,
            price=self.price,
            currency=self.currency,
            barcode=self.barcode,
        )


class CatalogItemOut(BaseModel):
    id: str
    name: str
    coarse_class: str
    description: str
    price: float | None
    currency: str
    barcode: str | None
    images: int

    @classmethod
    def of(cls, i: CatalogItem) -> CatalogItemOut:
        return cls(
            id=i.id,
            name=i.name,
            coarse_class=i.coarse_class,
            description=i.description,
            price=i.price,
            currency=i.currency,
            barcode=i.barcode,
            images=len(i.images),
        )
