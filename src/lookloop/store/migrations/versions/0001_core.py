"""core tables: asks, labels, catalogue

Revision ID: 0001_core
Revises: 
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0001_core'
down_revision = None
branch_labels = ('core',)
depends_on = None


def upgrade() -> None:
    op.create_table('asks',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('device_id', sa.String(length=64), nullable=False),
    sa.Column('question', sa.Text(), nullable=False),
    sa.Column('idempotency_key', sa.String(length=128), nullable=True),
    sa.Column('frame_sha', sa.String(length=64), nullable=True),
    sa.Column('frame_media_type', sa.String(length=32), nullable=True),
    sa.Column('frame_width', sa.Integer(), nullable=True),
    sa.Column('frame_height', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('skill', sa.String(length=32), nullable=False),
    sa.Column('answer_text', sa.Text(), nullable=False),
    sa.Column('confidence', sa.Float(), nullable=False),
    sa.Column('decision', sa.String(length=16), nullable=False),
    sa.Column('policy', sa.String(length=64), nullable=False),
    sa.Column('model_version', sa.String(length=128), nullable=False),
    sa.Column('result', sa.JSON(), nullable=False),
    sa.Column('candidates', sa.JSON(), nullable=False),
    sa.Column('outcome', sa.String(length=24), nullable=False),
    sa.Column('final_answer', sa.Text(), nullable=True),
    sa.Column('latency_ms', sa.Float(), nullable=False),
    sa.Column('answered_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('idempotency_key')
    )
    with op.batch_alter_table('asks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_asks_created_at'), ['created_at'], unique=False)
        batch_op.create_index('ix_asks_device_created', ['device_id', 'created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_asks_device_id'), ['device_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_asks_frame_sha'), ['frame_sha'], unique=False)
        batch_op.create_index(batch_op.f('ix_asks_outcome'), ['outcome'], unique=False)

    op.create_table('catalog_items',
    sa.Column('id', sa.String(length=128), nullable=False),
    sa.Column('name', sa.String(length=256), nullable=False),
    sa.Column('coarse_class', sa.String(length=128), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('price', sa.Float(), nullable=True),
    sa.Column('currency', sa.String(length=8), nullable=False),
    sa.Column('barcode', sa.String(length=64), nullable=True),
    sa.Column('images', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('catalog_items', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_catalog_items_barcode'), ['barcode'], unique=False)
        batch_op.create_index(batch_op.f('ix_catalog_items_name'), ['name'], unique=False)

    op.create_table('labels',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('ask_id', sa.String(length=32), nullable=True),
    sa.Column('frame_sha', sa.String(length=64), nullable=True),
    sa.Column('image_path', sa.Text(), nullable=True),
    sa.Column('device_id', sa.String(length=64), nullable=True),
    sa.Column('skill', sa.String(length=32), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.Column('source', sa.String(length=24), nullable=False),
    sa.Column('author', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['ask_id'], ['asks.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('labels', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_labels_ask_id'), ['ask_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_labels_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_labels_device_id'), ['device_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_labels_frame_sha'), ['frame_sha'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('labels', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_labels_frame_sha'))
        batch_op.drop_index(batch_op.f('ix_labels_device_id'))
        batch_op.drop_index(batch_op.f('ix_labels_created_at'))
        batch_op.drop_index(batch_op.f('ix_labels_ask_id'))

    op.drop_table('labels')
    with op.batch_alter_table('catalog_items', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_catalog_items_name'))
        batch_op.drop_index(batch_op.f('ix_catalog_items_barcode'))

    op.drop_table('catalog_items')
    with op.batch_alter_table('asks', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_asks_outcome'))
        batch_op.drop_index(batch_op.f('ix_asks_frame_sha'))
        batch_op.drop_index(batch_op.f('ix_asks_device_id'))
        batch_op.drop_index('ix_asks_device_created')
        batch_op.drop_index(batch_op.f('ix_asks_created_at'))

    op.drop_table('asks')
