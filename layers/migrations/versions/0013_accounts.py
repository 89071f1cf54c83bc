"""Accounts for every role: department staff (职能部门工作人员, bound to one department),
and the account log — who created, disabled, re-enabled an account or reset its
password, when, and what it was before and after (layers.accounts). Append-only as the
upkeep log is: a row once written is never updated or deleted.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE users ADD COLUMN department_id integer REFERENCES departments (id)")
    op.execute("ALTER TABLE users DROP CONSTRAINT ck_users_role")
    op.execute(
        "ALTER TABLE users ADD CONSTRAINT ck_users_role CHECK (role IN "
        "('admin', 'dispatcher', 'grid_worker', 'department_staff', 'member'))"
    )
    # each bound role carries what it is bound to, and nothing else binds it
    op.execute(
        "ALTER TABLE users ADD CONSTRAINT ck_users_department "
        "CHECK ((role = 'department_staff') = (department_id IS NOT NULL))"
    )
    op.execute(
        """
        CREATE TABLE account_log (
            id bigserial PRIMARY KEY,
            at timestamptz NOT NULL DEFAULT gridbranch_now(),
            actor text NOT NULL,
            username text NOT NULL,
            area text,
            action text NOT NULL CHECK (action IN ('create', 'disable', 'enable', 'reset_password')),
            before jsonb,
            after jsonb NOT NULL
        )
        """
    )
    op.execute("CREATE INDEX ix_account_log_username ON account_log (username, at DESC)")
    op.execute(
        """
        CREATE FUNCTION account_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'account_log is append-only: % refused', TG_OP;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER account_log_append_only BEFORE UPDATE OR DELETE ON account_log "
        "FOR EACH ROW EXECUTE FUNCTION account_log_append_only()"
    )
    op.execute(
        "CREATE TRIGGER account_log_no_truncate BEFORE TRUNCATE ON account_log "
        "FOR EACH STATEMENT EXECUTE FUNCTION account_log_append_only()"
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS account_log")
    op.execute("DROP FUNCTION IF EXISTS account_log_append_only()")
    op.execute("DELETE FROM users WHERE role = 'department_staff'")
    op.execute("ALTER TABLE users DROP CONSTRAINT ck_users_department")
    op.execute("ALTER TABLE users DROP CONSTRAINT ck_users_role")
    op.execute(
        "ALTER TABLE users ADD CONSTRAINT ck_users_role CHECK (role IN "
        "('admin', 'dispatcher', 'grid_worker', 'member'))"
    )
    op.execute("ALTER TABLE users DROP COLUMN department_id")
