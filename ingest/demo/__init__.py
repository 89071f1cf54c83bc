"""The Jinshui demo district (金水区): a deterministic, seeded synthetic district on the
real district boundary. ``generate.build_demo`` builds it in memory; ``load.load_demo``
writes it to PostGIS in one transaction and ``load.check_invariants`` verifies it."""
