"""Owners keep the subject of the caller who created them.

An owner's items are changed only by the caller whose token names that subject, or by one
holding the admin scope. Owners created before this revision have none: only an admin
changes their items until a subject is set (``UPDATE owner SET subject = ... WHERE ...``).

Revision ID: 0003_owner_subject
Revises: 0002
Create Date: 2026-12-07 04:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_owner_subject"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add ``owner.subject``, empty for every owner there is."""
    op.add_column("owner", sa.Column("subject", sa.String(length=255), nullable=True))


def downgrade() -> None:
    """Drop ``owner.subject``."""
    with op.batch_alter_table("owner") as batch:
        batch.drop_column("subject")
