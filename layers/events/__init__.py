"""Events (事件): report anywhere, route by location and category, follow the lifecycle
of the national digital urban management flow, warn on time limits.

* :mod:`layers.events.lifecycle` — the states, who may move an event from which to
  which (:func:`transition_event`), time limits and the working calendar;
* :mod:`layers.events.report` — reporting channels and limits, the categories and
  departments reports are filed under (the group writer: :mod:`layers.events_batch`);
* :mod:`layers.events.routing` — where an event goes and which members could assist;
* :mod:`layers.events.views` — one event, its track, the lists, who may see one.

The names below are the package's API, imported by the service as ``layers.events``.
"""

from layers.events.lifecycle import (
    ACTIONS,
    CLOCK,
    DEPARTMENT,
    DISPATCHERS,
    HANDLERS,
    NEEDS_REASON,
    OPEN,
    TASK_OPEN,
    TERMINAL,
    TRANSITIONS,
    Move,
    Transition,
    actions_from,
    allowed,
    calendar_days,
    load_calendar,
    set_calendar_day,
    transition_event,
)
from layers.events.report import (
    CHANNEL_NAMES,
    CHANNEL_ROLES,
    categories,
    category_codes,
    check_channel,
    check_photos,
    check_report_size,
    department_code,
    department_id,
    stored_report,
)
from layers.events.routing import (
    BANDS,
    SAME_GRID,
    count_routing_probe,
    distance_band,
    routes,
    routing,
    set_route,
    suggest_members,
)
from layers.events.views import event_area, event_log, event_row, event_view, events_within, scope_prefix

__all__ = [
    "ACTIONS",
    "BANDS",
    "CHANNEL_NAMES",
    "CHANNEL_ROLES",
    "CLOCK",
    "DEPARTMENT",
    "DISPATCHERS",
    "HANDLERS",
    "NEEDS_REASON",
    "OPEN",
    "SAME_GRID",
    "TASK_OPEN",
    "TERMINAL",
    "TRANSITIONS",
    "Move",
    "Transition",
    "actions_from",
    "allowed",
    "calendar_days",
    "categories",
    "category_codes",
    "check_channel",
    "check_photos",
    "check_report_size",
    "count_routing_probe",
    "department_code",
    "department_id",
    "distance_band",
    "event_area",
    "event_log",
    "event_row",
    "event_view",
    "events_within",
    "load_calendar",
    "routes",
    "routing",
    "scope_prefix",
    "set_calendar_day",
    "set_route",
    "stored_report",
    "suggest_members",
    "transition_event",
]
