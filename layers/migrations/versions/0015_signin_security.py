"""Sign-in and session security: revocable tokens, sessions kept across reloads, the
account lockout and the failed-sign-in throttle, members' activation codes.

* ``users.token_epoch``: every token carries the epoch it was issued under; a change of
  the account's password, role, binding or state (a trigger, so no writer can forget it)
  or a sign-out bumps it, and all its tokens stop at once — checked in the account read
  every authenticated request makes anyway. ``users.must_change_password`` after an
  admin's reset.
* ``auth_sessions``: one row per sign-in, holding the hash of its refresh token (the
  httpOnly cookie that keeps a session across reloads), its absolute end and when it was
  last renewed (the idle timeout).
* ``signin_guard``: failures and lock per name tried — existing or not, so that a lock
  says nothing about whether an account exists. ``signin_log``: every attempt, by name
  and address (the address throttle counts its failures). Both append or update only
  what sign-in itself writes.
* ``activation_codes``: one-time codes a community admin hands to members (only their
  SHA-256, salted with the member's id, is kept), valid until ``expires_at``.
* ``account_log`` learns the new actions.

Revision ID: 0015
Revises: 0019
Create Date: 2026-12-03
"""

from alembic import op

revision = "0015"
down_revision = "0019"
branch_labels = None
depends_on = None

ACTIONS_0013 = "('create', 'disable', 'enable', 'reset_password')"
ACTIONS = (
    "('create', 'disable', 'enable', 'reset_password', 'change_password', 'activate', 'issue_code', 'lock', 'sign_out')"
)


def upgrade() -> None:
    op.execute("ALTER TABLE users ADD COLUMN token_epoch integer NOT NULL DEFAULT 0")
    op.execute("ALTER TABLE users ADD COLUMN must_change_password boolean NOT NULL DEFAULT false")
    op.execute(
        """
        CREATE FUNCTION users_token_epoch() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.password_hash IS DISTINCT FROM OLD.password_hash OR NEW.role IS DISTINCT FROM OLD.role
               OR NEW.area_code IS DISTINCT FROM OLD.area_code OR NEW.member_id IS DISTINCT FROM OLD.member_id
               OR NEW.department_id IS DISTINCT FROM OLD.department_id OR NEW.active IS DISTINCT FROM OLD.active
               OR NEW.username IS DISTINCT FROM OLD.username THEN
                NEW.token_epoch := greatest(NEW.token_epoch, OLD.token_epoch + 1);
            END IF;
            RETURN NEW;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER users_token_epoch BEFORE UPDATE ON users FOR EACH ROW EXECUTE FUNCTION users_token_epoch()"
    )
    op.execute(
        """
        CREATE TABLE auth_sessions (
            id text PRIMARY KEY,
            user_id integer NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            epoch integer NOT NULL,
            refresh_hash text NOT NULL UNIQUE,
            created_at timestamptz NOT NULL DEFAULT gridbranch_now(),
            renewed_at timestamptz NOT NULL DEFAULT gridbranch_now(),
            expires_at timestamptz NOT NULL,
            ended_at timestamptz
        )
        """
    )
    op.execute("CREATE INDEX ix_auth_sessions_user ON auth_sessions (user_id)")
    op.execute(
        """
        CREATE TABLE signin_guard (
            name text PRIMARY KEY,
            failures integer NOT NULL DEFAULT 0,
            locked_until timestamptz
        )
        """
    )
    op.execute(
        """
        CREATE TABLE signin_log (
            id bigserial PRIMARY KEY,
            at timestamptz NOT NULL DEFAULT gridbranch_now(),
            name text NOT NULL,
            address text,
            outcome text NOT NULL CHECK (outcome IN ('ok', 'failed', 'locked', 'throttled'))
        )
        """
    )
    op.execute("CREATE INDEX ix_signin_log_address ON signin_log (address, at DESC)")
    op.execute("CREATE INDEX ix_signin_log_name ON signin_log (name, at DESC)")
    op.execute(
        """
        CREATE TABLE activation_codes (
            id bigserial PRIMARY KEY,
            member_id integer NOT NULL REFERENCES members (id) ON DELETE CASCADE,
            code_hash text NOT NULL,
            issued_by text NOT NULL,
            issued_at timestamptz NOT NULL DEFAULT gridbranch_now(),
            expires_at timestamptz NOT NULL,
            used_at timestamptz,
            voided_at timestamptz
        )
        """
    )
    # at most one open code per member: issuing a new one voids the one before
    op.execute(
        "CREATE UNIQUE INDEX ux_activation_codes_open ON activation_codes (member_id) "
        "WHERE used_at IS NULL AND voided_at IS NULL"
    )
    op.execute("ALTER TABLE account_log DROP CONSTRAINT account_log_action_check")
    op.execute(f"ALTER TABLE account_log ADD CONSTRAINT account_log_action_check CHECK (action IN {ACTIONS})")


def downgrade() -> None:
    op.execute("ALTER TABLE account_log DROP CONSTRAINT account_log_action_check")
    # the log is append-only: rows of the new actions stay, unchecked
    op.execute(
        f"ALTER TABLE account_log ADD CONSTRAINT account_log_action_check CHECK (action IN {ACTIONS_0013}) NOT VALID"
    )
    op.execute("DROP TABLE IF EXISTS activation_codes")
    op.execute("DROP TABLE IF EXISTS signin_log")
    op.execute("DROP TABLE IF EXISTS signin_guard")
    op.execute("DROP TABLE IF EXISTS auth_sessions")
    op.execute("DROP TRIGGER IF EXISTS users_token_epoch ON users")
    op.execute("DROP FUNCTION IF EXISTS users_token_epoch()")
    op.execute("ALTER TABLE users DROP COLUMN must_change_password")
    op.execute("ALTER TABLE users DROP COLUMN token_epoch")
