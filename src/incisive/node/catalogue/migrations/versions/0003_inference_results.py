"""inference results

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "inference_result",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("bundle_digest", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.String(length=64), nullable=False),
        sa.Column("pseudonym", sa.String(length=32), nullable=True),
        sa.Column("series_uid", sa.String(length=64), nullable=True),
        sa.Column("sop_uid", sa.String(length=64), nullable=True),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("positive", sa.Boolean(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("sr_sop_uid", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inference_result")),
    )
    with op.batch_alter_table("inference_result", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_inference_result_model"), ["model"], unique=False)
        batch_op.create_index(batch_op.f("ix_inference_result_run_id"), ["run_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_inference_result_series_uid"), ["series_uid"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("inference_result", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_inference_result_series_uid"))
        batch_op.drop_index(batch_op.f("ix_inference_result_run_id"))
        batch_op.drop_index(batch_op.f("ix_inference_result_model"))
    op.drop_table("inference_result")
