"""Settings, one class per concern, all read from ``GRIDBRANCH_*`` environment variables.

Nothing here is read at import time: call :meth:`Settings.from_env` (the CLI does) or
build the classes explicitly (tests do).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent

DEFAULT_ROLES = (
    "法治建设宣传员",
    "社情民意联络员",
    "文明新风倡导员",
    "平安创建示范员",
    "民主管理监督员",
    "党员服务协理员",
)


class DatabaseSettings(BaseSettings):
    """Where PostGIS is. ``url`` set: use it and start nothing; unset: the private cluster."""

    model_config = SettingsConfigDict(env_prefix="GRIDBRANCH_", extra="ignore")

    database_url: str | None = None
    db_dir: Path = PROJECT_ROOT / ".gridbranch" / "pg"
    db_port: int = Field(55432, ge=1024, le=65535)
    db_name: str = "gridbranch"
    pool_size: int = Field(10, ge=1, le=200)


class AuthSettings(BaseSettings):
    """Token signing. A secret must be given outside the demo."""

    model_config = SettingsConfigDict(env_prefix="GRIDBRANCH_", extra="ignore")

    auth_secret: SecretStr | None = None
    token_minutes: int = Field(12 * 60, ge=1)


class ServiceSettings(BaseSettings):
    """HTTP serving and service-wide behaviour."""

    model_config = SettingsConfigDict(env_prefix="GRIDBRANCH_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    demo: bool = False
    demo_password: SecretStr | None = None
    page_limit_max: int = Field(1000, ge=1)
    roles: tuple[str, ...] = DEFAULT_ROLES


class LocateSettings(BaseSettings):
    """Locating points in the grid layer."""

    model_config = SettingsConfigDict(env_prefix="GRIDBRANCH_LOCATE_", extra="ignore")

    tolerance_m: float = Field(30.0, ge=0, le=10_000, description="gap tolerance for a `nearest` match")
    edge_m: float = Field(0.05, ge=0, le=10, description="distance that counts as on a grid's edge")
    batch_max_rows: int = Field(1_000_000, ge=1)


@dataclass
class Settings:
    """All settings of one app instance."""

    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    service: ServiceSettings = field(default_factory=ServiceSettings)
    locate: LocateSettings = field(default_factory=LocateSettings)

    @classmethod
    def from_env(cls, **service_overrides) -> "Settings":
        """Every concern read from the environment now (never at import)."""
        values = {f.name: f.default_factory() for f in fields(cls)}
        values["service"] = ServiceSettings(**service_overrides)
        return cls(**values)
