"""``Idempotency-Key`` on the write endpoints that create something (``POST /v1/events``,
``POST /v1/registrations``, Open311 ``POST requests.json``): a client whose connection
was cut after sending may send the request again with the same key, and gets the first
answer (status and body) without a second write. Keys are per caller (anonymous callers
share one space: the key alone) and expire after ``GRIDBRANCH_IDEMPOTENCY_HOURS``; the
same key with another body or endpoint is a 422 naming the header; a concurrent request
with the same key waits for the first and gets its answer. Storage and the rules:
:mod:`layers.idempotency`. Only answered writes are kept: a refused request keeps
nothing, so it may be corrected and sent again under its key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import anyio
from fastapi import Header, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session
from starlette.responses import Response

from geo_api.deps import Caller, bound_session, caches_of
from layers import idempotency as keys
from layers.events_batch import Pending, Stored, store_reports

#: The request header, as a route parameter: printable ASCII, 1–255 characters.
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias=keys.HEADER,
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="a key of your choosing (a UUID) that makes a retry of this request safe: the same key and body "
        "answer as the first time and store nothing new; another body under the key is a 422",
    ),
]


@dataclass(frozen=True)
class Once:
    """One request's key (``key`` None: no header, nothing to do) and what identifies it."""

    key: str | None
    owner: str
    fingerprint: str
    ttl_s: float

    @classmethod
    def of(cls, request: Request, caller: Caller, key: str | None, content: Any) -> Once:
        hours = request.app.state.settings.service.idempotency_hours
        route = f"{request.method} {request.url.path}"
        return cls(key, caller.username or "", keys.fingerprint(route, content) if key else "", hours * 3600.0)

    def claim(self, session: Session) -> Response | None:
        """Take the key in the session's transaction; the first answer if it was given
        already (None: go on, write, then :meth:`answer`)."""
        if self.key is None:
            return None
        first = keys.claim(session, self.owner, self.key, self.fingerprint, ttl_s=self.ttl_s)
        if first is None:
            return None
        return Response(
            first.body, status_code=first.status, media_type=first.media_type, headers={"Idempotent-Replayed": "true"}
        )

    def answer(self, session: Session, status: int, content: Any):
        """The answer to give, recorded under the key in the session's transaction (the
        caller commits); without a key, ``content`` as it is."""
        if self.key is None:
            return content
        response = content if isinstance(content, Response) else JSONResponse(content, status_code=status)
        keys.record(
            session,
            self.owner,
            self.key,
            keys.Answer(response.status_code, response.headers["content-type"], bytes(response.body)),
        )
        return response


async def report_once(request: Request, once: Once, report: Pending, answer: Callable[[Stored], Response]) -> Response:
    """Store one report under ``once``'s key: its claim, the report and the answer in one
    transaction (not in a group of the report batcher, whose groups commit together),
    or the first answer if the key was answered before."""
    app = request.app
    settings = app.state.settings

    def work() -> Response:
        bound = bound_session(app)
        if bound is not None:  # a test's session: inside its transaction
            conn = bound.connection()
            outer = conn.begin_nested()
        else:
            conn = app.state.engine.connect()
            outer = conn.begin()
        try:
            # store_reports commits its session: here that ends a savepoint, the
            # transaction (claim, report, answer) is committed below
            session = Session(bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False)
            replay = once.claim(session)
            if replay is None:
                outcome = store_reports(
                    session,
                    caches_of(app).grid_index,
                    [report],
                    tolerance_m=settings.locate.tolerance_m,
                    edge_m=settings.locate.edge_m,
                    duplicate_radius_m=settings.events.duplicate_radius_m,
                    duplicate_window_hours=settings.events.duplicate_window_hours,
                )[0]
                if isinstance(outcome, BaseException):
                    raise outcome
                replay = once.answer(session, 0, answer(outcome))
                session.commit()
            session.close()
            outer.commit()
            return replay
        except BaseException:
            outer.rollback()
            raise
        finally:
            if bound is None:
                conn.close()

    return await anyio.to_thread.run_sync(work)
