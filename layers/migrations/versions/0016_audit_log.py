"""The personal-data audit (layers.audit): one row per response that carried a member's
name, phone or residence or a reporter's contact — who, when, which endpoint, which
records. Append-only as account_log and upkeep_log are, with one way out: the retention
purge (``audit_purge(keep)``), which deletes only rows older than ``keep`` before the
clock (``gridbranch_now()``) and never keeps less than a day.

Also: event categories of public space (roads, street lights, manholes…), whose reports
Open311 shows at their own location; others at their grid's label point.

Revision ID: 0016
Revises: 0018
Create Date: 2026-12-03
"""

from alembic import op

revision = "0016"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE audit_log (
            id bigserial PRIMARY KEY,
            at timestamptz NOT NULL DEFAULT gridbranch_now(),
            actor text NOT NULL,
            role text NOT NULL,
            area text,
            method text NOT NULL,
            endpoint text NOT NULL,
            path text NOT NULL,
            status integer NOT NULL,
            fields text[] NOT NULL,
            records text,
            detail jsonb
        )
        """
    )
    # which records an answer held, once per distinct set (a digest of it): the same tile
    # or page answered again shares its set, so the member index grows per set, not per
    # answer
    op.execute(
        """
        CREATE TABLE audit_records (
            digest text PRIMARY KEY,
            member_ids bigint[] NOT NULL,
            event_ids bigint[] NOT NULL
        )
        """
    )
    op.execute("CREATE INDEX ix_audit_log_at ON audit_log (at DESC)")
    op.execute("CREATE INDEX ix_audit_log_actor ON audit_log (actor, at DESC)")
    op.execute("CREATE INDEX ix_audit_log_records ON audit_log (records)")
    op.execute("CREATE INDEX ix_audit_records_members ON audit_records USING gin (member_ids)")
    op.execute(
        """
        CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            cutoff text := current_setting('gridbranch.audit_purge_before', true);
        BEGIN
            -- the one deletion allowed: audit_purge's, of rows older than its cutoff and
            -- of record sets no row names any more (a cutoff set by hand is held to the
            -- same bound: at least a day back)
            IF TG_OP = 'DELETE' AND cutoff IS NOT NULL AND cutoff <> ''
               AND cutoff::timestamptz <= gridbranch_now() - interval '1 day' THEN
                IF TG_TABLE_NAME = 'audit_log' THEN
                    IF OLD.at < cutoff::timestamptz THEN
                        RETURN OLD;
                    END IF;
                ELSIF NOT EXISTS (SELECT 1 FROM audit_log WHERE records = OLD.digest) THEN
                    RETURN OLD;  -- a record set no row names any more
                END IF;
            END IF;
            RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log "
        "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()"
    )
    op.execute(
        "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()"
    )
    op.execute(
        "CREATE TRIGGER audit_records_append_only BEFORE UPDATE OR DELETE ON audit_records "
        "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()"
    )
    op.execute(
        "CREATE TRIGGER audit_records_no_truncate BEFORE TRUNCATE ON audit_records "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()"
    )
    op.execute(
        """
        CREATE FUNCTION audit_purge(keep interval) RETURNS bigint LANGUAGE plpgsql AS $$
        DECLARE
            cutoff timestamptz;
            n bigint;
        BEGIN
            IF keep IS NULL OR keep < interval '1 day' THEN
                RAISE EXCEPTION 'audit_purge keeps at least one day, not %', keep;
            END IF;
            cutoff := gridbranch_now() - keep;
            -- no writer may name a record set between the check below and the end
            LOCK TABLE audit_records IN SHARE ROW EXCLUSIVE MODE;
            PERFORM set_config('gridbranch.audit_purge_before', cutoff::text, true);
            DELETE FROM audit_log WHERE at < cutoff;
            GET DIAGNOSTICS n = ROW_COUNT;
            DELETE FROM audit_records r WHERE NOT EXISTS (SELECT 1 FROM audit_log a WHERE a.records = r.digest);
            PERFORM set_config('gridbranch.audit_purge_before', '', true);
            RETURN n;
        END $$
        """
    )
    op.execute("ALTER TABLE event_categories ADD COLUMN public_space boolean NOT NULL DEFAULT false")


def downgrade() -> None:
    op.execute("ALTER TABLE event_categories DROP COLUMN public_space")
    op.execute("DROP FUNCTION IF EXISTS audit_purge(interval)")
    op.execute("DROP TABLE IF EXISTS audit_records")
    op.execute("DROP TABLE IF EXISTS audit_log")
    op.execute("DROP FUNCTION IF EXISTS audit_log_append_only()")
