"""The demo's signing secret is kept beside its database and outlives a restart."""

import os
import stat

import pytest
from fastapi.testclient import TestClient

from geo_api.app import create_app, demo_secret_path
from geo_api.cli import _worker_env
from geo_api.settings import AuthSettings, DatabaseSettings, ServiceSettings, Settings
from layers.errors import ConfigError
from tests.conftest import TEST_PASSWORD


def demo_settings(db_dir, secret=None) -> Settings:
    return Settings(
        database=DatabaseSettings(database_url="postgresql://unused@127.0.0.1:1/unused", db_dir=db_dir),
        auth=AuthSettings(auth_secret=secret),
        service=ServiceSettings(demo=True, gc_freeze=False),
    )


def client_for(settings, engine, session) -> TestClient:
    app = create_app(settings, engine=engine)
    app.state.bound_session = session  # geo_api.deps.bound_session
    return TestClient(app)


def test_a_restarted_demo_accepts_the_tokens_it_issued(tmp_path, demo_engine, demo_db):
    db_dir = tmp_path / "cluster" / "pg"
    with client_for(demo_settings(db_dir), demo_engine, demo_db) as first:
        r = first.post("/v1/auth/token", data={"username": "admin", "password": TEST_PASSWORD})
        assert r.status_code == 200, r.text
        token = {"Authorization": f"Bearer {r.json()['access_token']}"}
    path = demo_secret_path(demo_settings(db_dir))
    assert path == tmp_path / "cluster" / "auth_secret"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(path.read_text().strip()) >= 32

    with client_for(demo_settings(db_dir), demo_engine, demo_db) as second:  # the restart
        r = second.get("/v1/auth/me", headers=token)
        assert r.status_code == 200 and r.json()["username"] == "admin"
    assert _worker_env(demo_settings(db_dir))["GRIDBRANCH_AUTH_SECRET"] == path.read_text().strip()

    with client_for(demo_settings(tmp_path / "other" / "pg"), demo_engine, demo_db) as elsewhere:
        assert elsewhere.get("/v1/auth/me", headers=token).status_code == 401  # another demo, another secret


def test_the_environment_secret_wins_and_no_file_is_written(tmp_path):
    given = "s" * 40
    app = create_app(demo_settings(tmp_path / "pg", secret=given))
    assert app.state.auth_secret == given
    assert not (tmp_path / "auth_secret").exists()


def test_a_kept_secret_readable_by_others_is_made_private(tmp_path):
    path = tmp_path / "auth_secret"
    path.write_text("k" * 64 + "\n")
    os.chmod(path, 0o644)
    app = create_app(demo_settings(tmp_path / "pg"))
    assert app.state.auth_secret == "k" * 64
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_a_damaged_kept_secret_is_refused(tmp_path):
    (tmp_path / "auth_secret").write_text("short\n")
    with pytest.raises(ConfigError, match="shorter than 32"):
        create_app(demo_settings(tmp_path / "pg"))


def test_outside_the_demo_there_is_still_no_default(tmp_path):
    settings = demo_settings(tmp_path / "pg")
    settings.service.demo = False
    with pytest.raises(ConfigError, match="AUTH_SECRET"):
        create_app(settings)
    assert not (tmp_path / "auth_secret").exists()
