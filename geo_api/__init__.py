"""gridbranch HTTP service: app factory, routers, dependencies and CLI."""
