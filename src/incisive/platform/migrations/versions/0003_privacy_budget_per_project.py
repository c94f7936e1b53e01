"""privacy budgets per researcher and project

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('privacy_budget',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('project', sa.String(length=64), nullable=False),
    sa.Column('budget', sa.Float(), nullable=False),
    sa.Column('spent', sa.Float(), nullable=False),
    sa.Column('exhausted', sa.Boolean(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['user_account.id'], name=op.f('fk_privacy_budget_user_id_user_account')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_privacy_budget')),
    sa.UniqueConstraint('user_id', 'project', name=op.f('uq_privacy_budget_user_id'))
    )
    with op.batch_alter_table('privacy_budget', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_privacy_budget_user_id'), ['user_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('privacy_budget', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_privacy_budget_user_id'))
    op.drop_table('privacy_budget')
