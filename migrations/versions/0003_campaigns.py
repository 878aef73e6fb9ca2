"""campaigns: campaigns, contacts, call_attempts, dnc_numbers (the outbound dialer)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27

``ix_contacts_due`` (campaign_id, state, next_attempt_at) serves the claim query;
``ix_contacts_lease`` (state, lease_until) serves lease recovery.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "campaigns",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("agent_profile", sa.String(length=64), nullable=False),
        sa.Column("caller_id", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("max_concurrent_calls", sa.Integer(), nullable=False),
        sa.Column("spec", sa.Text(), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaigns")),
        sa.UniqueConstraint("key", name=op.f("uq_campaigns_key")),
    )
    op.create_table(
        "contacts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("dedupe_key", sa.String(length=32), nullable=False),
        sa.Column("e164", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("timezones", sa.Text(), nullable=False),
        sa.Column("consent_type", sa.String(length=8), nullable=True),
        sa.Column("consent_at", UTC, nullable=True),
        sa.Column("fields", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTC, nullable=True),
        sa.Column("claimed_by", sa.String(length=64), nullable=True),
        sa.Column("lease_until", UTC, nullable=True),
        sa.Column("skip_reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaigns.id"],
            name=op.f("fk_contacts_campaign_id_campaigns"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contacts")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_contacts_dedupe_key")),
    )
    op.create_index("ix_contacts_due", "contacts", ["campaign_id", "state", "next_attempt_at"])
    op.create_index("ix_contacts_lease", "contacts", ["state", "lease_until"])
    op.create_index(op.f("ix_contacts_e164"), "contacts", ["e164"])
    op.create_table(
        "call_attempts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("contact_id", sa.Integer(), nullable=False),
        sa.Column("attempt_no", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=64), nullable=False),
        sa.Column("e164", sa.String(length=16), nullable=False),
        sa.Column("call_id", sa.String(length=36), nullable=False),
        sa.Column("worker", sa.String(length=64), nullable=False),
        sa.Column("call_sid", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=True),
        sa.Column("answered_by", sa.String(length=32), nullable=True),
        sa.Column("duration_s", sa.Integer(), nullable=True),
        sa.Column("skip_reason", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("placed_at", UTC, nullable=True),
        sa.Column("ended_at", UTC, nullable=True),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaigns.id"],
            name=op.f("fk_call_attempts_campaign_id_campaigns"), ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["contacts.id"],
            name=op.f("fk_call_attempts_contact_id_contacts"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_call_attempts")),
        sa.UniqueConstraint(
            "contact_id", "attempt_no", name=op.f("uq_call_attempts_contact_id_attempt_no")
        ),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_call_attempts_idempotency_key")),
        sa.UniqueConstraint("call_sid", name=op.f("uq_call_attempts_call_sid")),
    )
    op.create_index(op.f("ix_call_attempts_status"), "call_attempts", ["status"])
    op.create_index(
        "ix_call_attempts_e164_created_at", "call_attempts", ["e164", "created_at"]
    )
    op.create_table(
        "dnc_numbers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("e164", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("added_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dnc_numbers")),
        sa.UniqueConstraint("e164", "source", name=op.f("uq_dnc_numbers_e164_source")),
    )


def downgrade() -> None:
    op.drop_table("dnc_numbers")
    op.drop_index("ix_call_attempts_e164_created_at", table_name="call_attempts")
    op.drop_index(op.f("ix_call_attempts_status"), table_name="call_attempts")
    op.drop_table("call_attempts")
    op.drop_index(op.f("ix_contacts_e164"), table_name="contacts")
    op.drop_index("ix_contacts_lease", table_name="contacts")
    op.drop_index("ix_contacts_due", table_name="contacts")
    op.drop_table("contacts")
    op.drop_table("campaigns")
