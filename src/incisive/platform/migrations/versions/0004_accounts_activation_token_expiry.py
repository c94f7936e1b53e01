"""accounts: person, activation secret, token expiry and last use, budgets per person

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 13:00:00.000000
"""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TOKEN_TTL = timedelta(days=90)  # tokens made before expiry existed get the default lifetime from now


def upgrade() -> None:
    # person is added NOT NULL with a server default and filled from the user name: an ALTER TABLE ADD COLUMN.
    # (Making a nullable column NOT NULL afterwards would make SQLite's batch mode re-create user_account, which
    # its foreign keys from api_token, query and privacy_budget refuse once accounts exist.)
    with op.batch_alter_table('user_account', schema=None) as batch_op:
        batch_op.add_column(sa.Column('person', sa.String(length=128), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('activation_hash', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('activation_expires_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('activated_at', sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE user_account SET person = username, activated_at = created_at")
    with op.batch_alter_table('user_account', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_user_account_person'), ['person'], unique=False)

    with op.batch_alter_table('api_token', schema=None) as batch_op:
        batch_op.add_column(sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True))
    token = sa.table('api_token', sa.column('expires_at', sa.DateTime(timezone=True)))
    op.execute(token.update().where(token.c.expires_at.is_(None)).values(expires_at=datetime.now(UTC) + TOKEN_TTL))

    with op.batch_alter_table('privacy_budget', schema=None) as batch_op:
        batch_op.add_column(sa.Column('person', sa.String(length=128), nullable=True))
    op.execute("UPDATE privacy_budget SET person = (SELECT person FROM user_account "
               "WHERE user_account.id = privacy_budget.user_id)")
    with op.batch_alter_table('privacy_budget', schema=None) as batch_op:
        batch_op.alter_column('person', existing_type=sa.String(length=128), nullable=False)
        batch_op.drop_constraint('uq_privacy_budget_user_id', type_='unique')
        batch_op.create_unique_constraint(batch_op.f('uq_privacy_budget_person'), ['person', 'project'])


def downgrade() -> None:
    with op.batch_alter_table('privacy_budget', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_privacy_budget_person'), type_='unique')
        batch_op.create_unique_constraint('uq_privacy_budget_user_id', ['user_id', 'project'])
        batch_op.drop_column('person')
    with op.batch_alter_table('api_token', schema=None) as batch_op:
        batch_op.drop_column('last_used_at')
        batch_op.drop_column('expires_at')
    with op.batch_alter_table('user_account', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_user_account_person'))
        batch_op.drop_column('activated_at')
        batch_op.drop_column('activation_expires_at')
        batch_op.drop_column('activation_hash')
        batch_op.drop_column('person')
