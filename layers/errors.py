"""The project's error vocabulary. Mapped to HTTP status in one place: ``geo_api.errors``."""

from __future__ import annotations


class GridbranchError(Exception):
    """Base of every error the project raises on purpose."""

    status = 400
    title = "Bad request"

    def __init__(self, detail: str, *, field: str | None = None, **extra):
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.extra = extra


class ConfigError(GridbranchError):
    """The installation or settings are wrong (not the caller's fault)."""

    status = 500
    title = "Configuration error"


class InvalidInput(GridbranchError):
    """A value the caller sent cannot be used; ``field`` names it."""

    status = 422
    title = "Invalid input"


class UnsupportedMedia(InvalidInput):
    """A file of a kind the service does not take (a photo that is no image)."""

    status = 415
    title = "Unsupported media type"


class NotFound(GridbranchError):
    status = 404
    title = "Not found"


class Conflict(GridbranchError):
    status = 409
    title = "Conflict"


class Unauthorized(GridbranchError):
    status = 401
    title = "Not authenticated"


class Forbidden(GridbranchError):
    status = 403
    title = "Forbidden"


class TooManyRequests(GridbranchError):
    """Over a per-caller limit; ``retry_after`` (seconds, in ``extra``) says when to try again."""

    status = 429
    title = "Too many requests"


class Unavailable(GridbranchError):
    """The service cannot answer now (the database is down or restarting); the same
    request may succeed shortly (``Retry-After``)."""

    status = 503
    title = "Service unavailable"
