"""Vector tiles (MVT) of the gridbranch layers, built in PostGIS.

- :mod:`tiles.layers` — the layers and their tile SQL, prepared once per connection;
- :mod:`tiles.derived` — attributes computed once per data version (grid registration
  figures, coverage findings, H3 counts);
- :mod:`tiles.service` — entitlement, the data-version read, rendering, ETags, gzip;
- (:mod:`layers.pg`, in the core: psycopg2 in asynchronous mode, a small pool and the
  coalesced data-version reader, so that a tile needs no thread;)
- :mod:`tiles.cache` — the in-process tile cache (invalidated by data versions);
- :mod:`tiles.tilejson`, :mod:`tiles.style` — TileJSON 3.0.0 and a MapLibre style;
- :mod:`tiles.tms`, :mod:`tiles.mvt` — tile arithmetic, a little protobuf.

Served by ``geo_api.routers.tiles`` (and, for anonymous public tiles ahead of the
routing, ``geo_api.tile_fastpath``): ``/tiles/{layers}/{z}/{x}/{y}.mvt``,
``/tiles/{layers}.json``, ``/tiles/style.json``. Settings: ``GRIDBRANCH_TILES_*``
(:class:`geo_api.settings.TileSettings`). Benchmark: ``bench/tiles.py``.
"""
