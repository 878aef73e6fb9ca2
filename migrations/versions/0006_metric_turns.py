"""per-turn metrics get a turn_id column; AMD verdicts get their own table

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27

``call_metrics.turn_id``: a turn's figure was stored as a second row named
``"<name>@<turn id>"``. It is now (name, turn_id); ``""`` marks the call-level row
(the call's latest value), not NULL, so that the one unique constraint
(call_id, name, turn_id) holds for call-level rows too (NULLs are distinct in a
unique constraint) and the recorder's upsert can target it on both backends.
Existing ``@`` rows are split on the first ``@``; downgrade joins them again.

``amd_verdicts``: the async AMD verdict was a ``call_status_events`` row with
``sequence = -1``. Those rows move to the new table (their MachineDetectionDuration
was never kept: NULL), and back on downgrade.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = sa.DateTime(timezone=True)
_OLD_AMD_SEQUENCE = -1


def _position_of_at() -> str:
    """SQL for the position of the first '@' in ``name`` (1-based; 0 when absent)."""
    return "strpos(name, '@')" if op.get_context().dialect.name == "postgresql" else (
        "instr(name, '@')")


def upgrade() -> None:
    op.create_table(
        "amd_verdicts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("call_sid", sa.String(length=64), nullable=False),
        sa.Column("answered_by", sa.String(length=32), nullable=False),
        sa.Column("detection_ms", sa.Integer(), nullable=True),
        sa.Column("at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_amd_verdicts")),
        sa.UniqueConstraint("call_sid", name=op.f("uq_amd_verdicts_call_sid")),
    )
    op.execute(
        "INSERT INTO amd_verdicts (call_sid, answered_by, at) "
        "SELECT call_sid, answered_by, at FROM call_status_events "
        f"WHERE sequence = {_OLD_AMD_SEQUENCE} AND answered_by IS NOT NULL"
    )
    op.execute(f"DELETE FROM call_status_events WHERE sequence = {_OLD_AMD_SEQUENCE}")

    with op.batch_alter_table("call_metrics") as batch:
        batch.add_column(
            sa.Column("turn_id", sa.String(length=64), server_default=sa.text("''"), nullable=False)
        )
        batch.drop_constraint("uq_call_metrics_call_id_name", type_="unique")
        batch.create_unique_constraint(
            op.f("uq_call_metrics_call_id_name_turn_id"), ["call_id", "name", "turn_id"]
        )
    # after the new constraint: ("x", "") and ("x", "t1") share (call_id, name)
    at = _position_of_at()
    op.execute(
        f"UPDATE call_metrics SET turn_id = substr(name, {at} + 1), "
        f"name = substr(name, 1, {at} - 1) WHERE {at} > 0"
    )


def downgrade() -> None:
    op.execute("UPDATE call_metrics SET name = name || '@' || turn_id WHERE turn_id <> ''")
    with op.batch_alter_table("call_metrics") as batch:
        batch.drop_constraint("uq_call_metrics_call_id_name_turn_id", type_="unique")
        batch.drop_column("turn_id")
        batch.create_unique_constraint(op.f("uq_call_metrics_call_id_name"), ["call_id", "name"])

    op.execute(
        "INSERT INTO call_status_events (call_sid, sequence, status, at, answered_by) "
        f"SELECT call_sid, {_OLD_AMD_SEQUENCE}, 'in-progress', at, answered_by "
        "FROM amd_verdicts"
    )
    op.drop_table("amd_verdicts")
