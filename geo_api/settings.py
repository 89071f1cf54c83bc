"""Settings, one class per concern, all read from ``GRIDBRANCH_*`` environment variables.

Nothing here is read at import time: call :meth:`Settings.from_env` (the CLI does) or
build the classes explicitly (tests do).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import date, datetime
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from layers.coverage.topology import Thresholds
from layers.db import DatabaseSettings  # the database concern lives in the core (layers.db)

DEFAULT_ROLES = (
    "法治建设宣传员",
    "社情民意联络员",
    "文明新风倡导员",
    "平安创建示范员",
    "民主管理监督员",
    "党员服务协理员",
)


class AuthSettings(BaseSettings):
    """Token signing. A secret must be given outside the demo."""

    model_config = SettingsConfigDict(env_prefix="GRIDBRANCH_", extra="ignore")

    auth_secret: SecretStr | None = None
    token_minutes: int = Field(12 * 60, ge=1)
    password_min_length: int = Field(10, ge=1, le=128, description="passwords: at least this many characters")
    password_min_classes: int = Field(
        3,
        ge=1,
        le=4,
        description="passwords: at least this many of lower case, upper case, digits and other characters",
    )
    token_idle_minutes: int = Field(
        30,
        ge=1,
        description="a session not renewed for this long ends (the idle "
        "timeout); an access token lives at most this long",
    )
    signin_lock_failures: int = Field(5, ge=1, description="failed sign-ins in a row that lock a username")
    signin_lock_minutes: float = Field(15, gt=0, description="how long a locked username stays locked")
    signin_address_failures: int = Field(
        20, ge=1, description="failed sign-ins from one address within the window that slow the address down"
    )
    signin_address_window_minutes: float = Field(10, gt=0, description="the window of signin_address_failures")
    signin_address_delay_seconds: int = Field(
        30, ge=1, description="a slowed address gets one attempt per this many seconds"
    )
    activation_days: int = Field(
        14,
        ge=1,
        le=365,
        description="members' activation codes are valid this many days unless the issuer says otherwise",
    )

    def password_policy(self):
        from layers.accounts import PasswordPolicy

        return PasswordPolicy(min_length=self.password_min_length, min_classes=self.password_min_classes)


class ServiceSettings(BaseSettings):
    """HTTP serving and service-wide behaviour."""

    model_config = SettingsConfigDict(env_prefix="GRIDBRANCH_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1, le=64, description="uvicorn worker processes of `gridbranch serve`")
    access_log: bool = Field(True, description="log every request (off behind a reverse proxy that logs)")
    log_format: Literal["text", "json"] = Field(
        "text",
        description="json: one JSON object per log line with the request id (geo_api.telemetry), "
        "and the access log by route template instead of uvicorn's raw paths",
    )
    metrics_allow: tuple[str, ...] = Field(
        ("127.0.0.1/32", "::1/128"),
        description="addresses or networks (CIDR) that may read /metrics (as the trusted proxies tell "
        "the client's address); others get a 403, so a public bind does not publish it",
    )
    demo: bool = False
    demo_password: SecretStr | None = None
    page_limit_max: int = Field(1000, ge=1)
    roles: tuple[str, ...] = DEFAULT_ROLES
    idempotency_hours: float = Field(
        24.0,
        gt=0,
        le=24 * 365,
        description="how long an Idempotency-Key's answer is kept (a retry within it gets the first answer)",
    )
    clock_at: datetime | None = Field(
        None,
        description="tests and simulations only: the service's clock stands still at this instant "
        "(ISO 8601 with offset) instead of following the wall clock",
    )
    gc_freeze: bool = Field(
        True,
        description="after start-up, exempt the long-lived objects from the cyclic garbage "
        "collector (gc.freeze): no ~100 ms full-collection pauses under load",
    )
    max_body_bytes: int = Field(
        1 << 20,
        ge=1024,
        description="request bodies larger than this are refused (413) "
        "before they are read, unless a kind of endpoint has "
        "its own limit (the locate batch)",
    )


class LocateSettings(BaseSettings):
    """Locating points in the grid layer."""

    model_config = SettingsConfigDict(env_prefix="GRIDBRANCH_LOCATE_", extra="ignore")

    tolerance_m: float = Field(30.0, ge=0, le=10_000, description="gap tolerance for a `nearest` match")
    edge_m: float = Field(0.05, ge=0, le=10, description="distance that counts as on a grid's edge")
    batch_max_rows: int = Field(1_000_000, ge=1, description="rows per batch for signed-in callers")
    batch_max_rows_anonymous: int = Field(10_000, ge=1, description="rows per batch for anonymous callers")
    batch_max_bytes: int = Field(64 << 20, ge=1024, description="batch bodies of signed-in callers, bytes")
    batch_max_bytes_anonymous: int = Field(2 << 20, ge=1024, description="batch bodies of anonymous callers, bytes")
    fast_path: bool = Field(True, description="anonymous single locates ahead of the routing (geo_api.fastpath)")


class CoverageSettings(BaseSettings):
    """Coverage analysis (gaps, overlaps, slivers) and H3 aggregation."""

    model_config = SettingsConfigDict(env_prefix="GRIDBRANCH_COVERAGE_", extra="ignore")

    # defaults: the analysis' own (layers.coverage.topology.Thresholds), written once
    sliver_m2: float = Field(
        Thresholds.sliver_m2, ge=0, description="gaps and overlaps smaller than this (m²) are slivers"
    )
    noise_m2: float = Field(
        Thresholds.noise_m2, ge=0, description="parts smaller than this (m²) are overlay residue, not findings"
    )
    stray_part_m2: float = Field(
        Thresholds.stray_part_m2, ge=0, description="a multipart grid's non-largest part below this (m²) is stray"
    )
    h3_min_count: int = Field(
        5, ge=1, description="H3 cells counting fewer people are suppressed for unentitled callers"
    )

    def thresholds(self) -> Thresholds:
        return Thresholds(sliver_m2=self.sliver_m2, noise_m2=self.noise_m2, stray_part_m2=self.stray_part_m2)


class EventSettings(BaseSettings):
    """Events: reporting limits, duplicates, routing suggestions, time limits and the
    working calendar, evaluation. Lists are JSON in the environment, e.g.
    ``GRIDBRANCH_EVENTS_HOLIDAYS='["2026-10-01","2026-10-02"]'``."""

    model_config = SettingsConfigDict(env_prefix="GRIDBRANCH_EVENTS_", extra="ignore")

    duplicate_radius_m: float = Field(100.0, ge=0, le=10_000, description="possible duplicates: same category within")
    duplicate_window_hours: float = Field(72.0, ge=0, le=24 * 365, description="possible duplicates: reported within")
    warn_share: float = Field(0.8, gt=0, lt=1, description="warning (预警) at this share of the time limit")
    suggest_radius_m: float = Field(1500.0, gt=0, le=50_000, description="member suggestions within")
    suggest_limit: int = Field(10, ge=1, le=100)
    max_open_tasks: int = Field(3, ge=1, description="members holding this many open tasks are not suggested")
    routing_probes_per_hour: int = Field(
        60, ge=1, le=100_000, description="member suggestions: distinct events per account and hour"
    )
    min_sample: int = Field(5, ge=1, description="evaluation: rates over fewer due events are not rated")
    max_description: int = Field(2000, ge=1, description="characters")
    max_photos: int = Field(9, ge=0)
    max_photo_url: int = Field(1000, ge=10, description="characters per photo URL")
    report_batch_max: int = Field(64, ge=1, le=1000, description="reports stored together in one transaction, at most")
    report_writers: int = Field(2, ge=1, le=16, description="groups of reports written at once per process")
    fast_path: bool = Field(True, description="anonymous reports ahead of the routing (geo_api.event_reports)")
    work_periods: str = Field("08:30-12:00,13:30-17:30", description="working hours, local time")
    weekend: tuple[int, ...] = Field((6, 7), description="ISO weekdays off (6 Saturday, 7 Sunday)")
    holidays: tuple[date, ...] = Field((), description="days off besides the work_calendar_days table")
    workdays: tuple[date, ...] = Field((), description="make-up working days (调休) besides the table")
    timezone: str = "Asia/Shanghai"

    def calendar(self, session):
        """The working calendar: these settings and the ``work_calendar_days`` table."""
        from layers import events as ev

        return ev.load_calendar(
            session,
            periods=self.work_periods,
            weekend=self.weekend,
            holidays=self.holidays,
            workdays=self.workdays,
            timezone=self.timezone,
        )


class TileSettings(BaseSettings):
    """Vector tiles: the in-process cache, HTTP caching, feature limits, gzip.
    ``GRIDBRANCH_TILES_FEATURE_LIMITS`` is JSON, e.g. ``'{"events": 2000}'``."""

    model_config = SettingsConfigDict(env_prefix="GRIDBRANCH_TILES_", extra="ignore")

    cache: bool = Field(True, description="keep rendered tiles in process (invalidated by data versions)")
    cache_mb: int = Field(256, ge=1, le=65_536, description="in-process tile cache size, MiB")
    cache_control: str = Field("public, no-cache", description="Cache-Control of tiles without personal data")
    cache_control_private: str = Field("private, no-store", description="Cache-Control of tiles with personal data")
    feature_limit: int = Field(5000, ge=1, le=1_000_000, description="features per layer and tile")
    feature_limits: dict[str, int] = Field(default_factory=dict, description="per-layer feature limits")
    gzip_level: int = Field(1, ge=1, le=9, description="gzip level of tiles (zlib-ng; 1 is its fast strategy)")
    fast_path: bool = Field(
        True, description="serve anonymous public tiles ahead of the routing (geo_api.tile_fastpath)"
    )
    proxy_revalidate: bool = Field(
        False,
        description="mark public tiles `X-Accel-Expires: @1` for an nginx in front: it keeps them and "
        "revalidates each request with If-None-Match (`gridbranch stack` sets it)",
    )


class ImportSettings(BaseSettings):
    """Imports through the web map (数据导入, ``/v1/imports``): where uploaded files wait for
    their commit, how large they may be and how long they are kept."""

    model_config = SettingsConfigDict(env_prefix="GRIDBRANCH_IMPORTS_", extra="ignore")

    dir: Path | None = Field(
        None,
        description="uploaded files (mode 0600) until committed or expired; default "
        "`imports` beside the private cluster's directory",
    )
    max_bytes: int = Field(256 << 20, ge=1024, description="largest file accepted, bytes (413 beyond)")
    ttl_minutes: float = Field(
        120.0, gt=0, le=7 * 24 * 60, description="an import not committed within this is expired and its file deleted"
    )

    def folder(self, database: DatabaseSettings) -> Path:
        return self.dir if self.dir is not None else database.db_dir.parent / "imports"


class PhotoSettings(BaseSettings):
    """Photos sent with public reports (``/v1/photos``, layers.photos)."""

    model_config = SettingsConfigDict(env_prefix="GRIDBRANCH_PHOTOS_", extra="ignore")

    dir: Path | None = Field(None, description="where photos are kept; default `photos` beside the private cluster")
    max_bytes: int = Field(10 << 20, ge=1024, description="largest upload, bytes (413 beyond)")
    max_pixels: int = Field(40_000_000, ge=10_000, description="largest image, pixels (a camera's 40 MP)")
    max_side: int = Field(2048, ge=256, le=8192, description="kept photos are scaled down to this side, pixels")

    def folder(self, database: DatabaseSettings) -> Path:
        return self.dir if self.dir is not None else database.db_dir.parent / "photos"


class SecuritySettings(BaseSettings):
    """Who is trusted to say where a request came from, which other sites may call the API
    or embed the map, and the security headers that follow (``geo_api.headers``). Lists
    are JSON in the environment, e.g. ``GRIDBRANCH_CORS_ORIGINS='["https://portal.example.cn"]'``."""

    model_config = SettingsConfigDict(env_prefix="GRIDBRANCH_", extra="ignore")

    trusted_proxies: tuple[str, ...] = Field(
        ("127.0.0.1",),
        description="addresses or networks (CIDR) of the reverse proxies whose X-Forwarded-For and "
        "X-Forwarded-Proto are believed: the client's address (rate limits) and scheme "
        "(HSTS) come from them; empty: from the connection itself",
    )
    cors_origins: tuple[str, ...] = Field(
        (),
        description="origins (scheme://host[:port]) whose pages may call the "
        "API from a browser (CORS); empty: none but our own",
    )
    embed_origins: tuple[str, ...] = Field(
        (),
        description="portal origins that may embed /map?embed=1 in a frame "
        "(CSP frame-ancestors); the plain /map is never framed",
    )
    hsts_max_age: int = Field(
        31_536_000,
        ge=0,
        description="Strict-Transport-Security max-age (seconds) on answers served over HTTPS; 0: no HSTS header",
    )


class RateLimitSettings(BaseSettings):
    """Rate limits of anonymous writes (``geo_api.ratelimit``): for each kind, requests a
    minute per client address and in all, with bursts of as many. In-process: each worker
    process counts its own requests (a shared store for several workers is to come)."""

    model_config = SettingsConfigDict(env_prefix="GRIDBRANCH_RATE_LIMIT_", extra="ignore")

    enabled: bool = Field(True, description="off: no rate limits at all")
    reports_per_address: int = Field(
        60,
        ge=1,
        description="anonymous event reports and Open311 requests a minute "
        "per address (a mobile carrier's NAT puts many "
        "residents behind one)",
    )
    reports_overall: int = Field(
        3000, ge=1, description="anonymous event reports and Open311 requests a minute from all addresses together"
    )
    locate_batches_per_address: int = Field(30, ge=1, description="anonymous locate batches a minute per address")
    locate_batches_overall: int = Field(300, ge=1, description="anonymous locate batches a minute in all")
    tokens_per_address: int = Field(60, ge=1, description="sign-in attempts (POST /v1/auth/token) a minute per address")
    photos_per_address: int = Field(
        30, ge=1, description="anonymous photo uploads (POST /v1/photos) a minute per address"
    )
    photos_overall: int = Field(600, ge=1, description="anonymous photo uploads a minute in all")
    tokens_overall: int = Field(1200, ge=1, description="sign-in attempts a minute in all")
    exempt: tuple[str, ...] = Field(
        (), description="addresses or networks (CIDR) never limited, e.g. the benchmarks' loopback: '[\"127.0.0.1\"]'"
    )


class AuditSettings(BaseSettings):
    """The personal-data audit (geo_api.audit, layers.audit) and what public answers show."""

    model_config = SettingsConfigDict(env_prefix="GRIDBRANCH_AUDIT_", extra="ignore")

    enabled: bool = Field(True, description="record every answer carrying personal data (audit_log)")
    wait: bool = Field(
        False,
        description="each such answer waits until its audit row is committed "
        "(otherwise rows are written right after, in groups)",
    )
    batch_max: int = Field(500, ge=1, le=100_000, description="audit rows written together, at most")
    linger_ms: float = Field(
        200.0, ge=0, le=10_000, description="without wait: how long a group of audit rows gathers before it is written"
    )
    retention_days: float = Field(
        365.0, ge=1, le=36_500, description="audit rows older than this are purged (gridbranch audit purge)"
    )
    public_grid_worker: bool = Field(
        True,
        description="the grid worker's name and phone in public answers "
        "(locate, grids, reports): the residents' contact",
    )


@dataclass
class Settings:
    """All settings of one app instance."""

    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    service: ServiceSettings = field(default_factory=ServiceSettings)
    locate: LocateSettings = field(default_factory=LocateSettings)
    events: EventSettings = field(default_factory=EventSettings)
    coverage: CoverageSettings = field(default_factory=CoverageSettings)
    tiles: TileSettings = field(default_factory=TileSettings)
    imports: ImportSettings = field(default_factory=ImportSettings)
    photos: PhotoSettings = field(default_factory=PhotoSettings)
    security: SecuritySettings = field(default_factory=SecuritySettings)
    rate_limit: RateLimitSettings = field(default_factory=RateLimitSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)

    @classmethod
    def from_env(cls, **service_overrides) -> Settings:
        """Every concern read from the environment now (never at import)."""
        values = {f.name: f.default_factory() for f in fields(cls)}  # type: ignore[operator]  # every field has one
        values["service"] = ServiceSettings(**service_overrides)
        return cls(**values)
