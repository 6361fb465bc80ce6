"""catalog: each item's family (Fruit, Vegetables, Packages), the group its guarantees hold in

Revision ID: 0103_item_family
Revises: 0102_loop_audit
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0103_item_family"
down_revision = "0102_loop_audit"
branch_labels = None
depends_on = None

_ICONIC = "iconic-images-and-descriptions"


def _family(images: object) -> str:
    """An item imported from the Grocery layout names its family in its iconic image's path."""
    if isinstance(images, str):
        try:
            images = json.loads(images)
        except ValueError:
            return ""
    for path in images if isinstance(images, list) else []:
        parts = str(path).replace("\\", "/").split("/")
        if _ICONIC in parts:
            i = parts.index(_ICONIC)
            if i + 2 < len(parts):
                return parts[i + 1]
    return ""


def upgrade() -> None:
    with op.batch_alter_table("catalog_items", schema=None) as batch_op:
        batch_op.add_column(sa.Column("family", sa.String(length=64), nullable=False, server_default=""))
    items = sa.table("catalog_items", sa.column("id", sa.String), sa.column("images", sa.JSON),
                     sa.column("family", sa.String))
    conn = op.get_bind()
    for item_id, images in conn.execute(sa.select(items.c.id, items.c.images)).all():
        family = _family(images)
        if family:
            conn.execute(items.update().where(items.c.id == item_id).values(family=family))


def downgrade() -> None:
    with op.batch_alter_table("catalog_items", schema=None) as batch_op:
        batch_op.drop_column("family")
