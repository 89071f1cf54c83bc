"""The in-process tile cache, ETags and conditional requests.

A cached tile is filed under its request key — (layers, z, x, y, caller scope) — and
remembers the data versions of the layers it was drawn from (``data_versions``, bumped
by triggers in the writing transaction, drawn from a sequence that never repeats). A
lookup hands the entry back only when those versions are still current, and, for tiles
whose content moves with the clock (event warnings and overdue flags), while the clock
has not reached the next instant at which a flag flips. Anything else is a miss and the
entry is dropped: a tile is never served from a version older than the one just read.

The cache is bounded in bytes and evicts the least recently used tiles first.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime

from zlib_ng import zlib_ng

FORMAT = "mvt"
#: Bodies up to this size are compressed with smaller zlib tables (:func:`gzip_body`).
SMALL_GZIP_BYTES = 16 * 1024


@dataclass
class CachedTile:
    #: the data versions it was drawn at; None when its layers were drawn at different
    #: versions (a write landed between them): such a tile is served but never cached
    versions: tuple[tuple[str, int], ...] | None
    etag: str  # strong ETag of the identity representation, without quotes
    body: bytes
    truncated: dict[str, int] = field(default_factory=dict)
    valid_until: datetime | None = None  # the next instant its content changes with time
    gzipped: bytes | None = None

    @property
    def size(self) -> int:
        return len(self.body) + len(self.gzipped or b"") + 200

    def fresh(self, versions: tuple[tuple[str, int], ...], now: datetime) -> bool:
        return (
            self.versions is not None
            and self.versions == versions
            and (self.valid_until is None or now < self.valid_until)
        )


def make_etag(
    layers: tuple[str, ...],
    z: int,
    x: int,
    y: int,
    versions: tuple[tuple[str, int], ...],
    scope: str | None,
    epochs: tuple[str, ...] = (),
    config: str = "",
) -> str:
    """A strong validator of the tile's identity representation: a hash of the layer
    list, the tile, the data versions it was drawn from, the caller's scope (for tiles
    with personal data), the clock epochs of time-dependent layers, the settings that
    shape tiles (feature limits, warning share, H3 minimum count) and the format. The
    gzip representation appends ``-gz`` (see :func:`etag_for`)."""
    raw = repr((FORMAT, layers, z, x, y, versions, scope, epochs, config)).encode()
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


def etag_for(etag: str, gzipped: bool) -> str:
    return f'"{etag}-gz"' if gzipped else f'"{etag}"'


def if_none_match(header: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` header matches the quoted ``etag`` (weak comparison,
    as RFC 9110 prescribes for this header; ``*`` matches any current representation)."""
    if not header:
        return False
    bare = etag.removeprefix("W/")
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == bare:
            return True
    return False


def gzip_body(body: bytes, level: int) -> bytes:
    """gzip with a fixed header (no name, mtime 0), so equal tiles give equal bytes.

    Compressed by zlib-ng (deflate-compatible output; at level 1 its fast strategy takes
    ~4 µs for a typical 0.5–5 KB tile against ~23 µs for zlib at 6, and ~65 µs against
    ~280 µs for a 67 KB low-zoom tile, for ~9 % more bytes — nginx's default level is 1
    for the same reason). Most tiles are a few hundred bytes to a few kilobytes, and for
    those deflate's default state (a 32 KiB window, 64 KiB hash and 64 KiB literal
    buffers, set up and torn down per call) costs more than compressing: the window is
    fitted to the body (it cannot reach further back than the body's start anyway, so the
    output is as small) and a small body gets smaller hash tables (``memLevel`` 5)."""
    n = len(body)
    window = max(9, min(15, (n - 1).bit_length()))
    c = zlib_ng.compressobj(level, zlib_ng.DEFLATED, 16 + window, 5 if n <= SMALL_GZIP_BYTES else 8)
    return c.compress(body) + c.flush()


class TileCache:
    """A thread-safe LRU of :class:`CachedTile` bounded by ``max_bytes``.

    Not a :class:`layers.versions.VersionedCache`, because it is another kind of thing:
    its entries are bounded in bytes, not in number (tiles weigh 100 B to 100 KB), and
    an entry's freshness is its own content state — data versions of some layers,
    digests of the derived records it was drawn with, and an instant after which its
    flags change — checked against the state of the request at hand, an entry found
    stale being dropped at once; a VersionedCache files values under versions and
    leaves older ones to age out."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple, CachedTile] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        return self._bytes

    def get(self, key: tuple, versions: tuple[tuple[str, int], ...], now: datetime) -> CachedTile | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            if not entry.fresh(versions, now):
                self._drop(key)
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry

    def holds(self, key: tuple) -> bool:
        """Whether anything is filed under ``key`` (counted as a miss when not)."""
        if key in self._entries:
            return True
        self.misses += 1
        return False

    def put(self, key: tuple, entry: CachedTile) -> None:
        if entry.versions is None or entry.size > self.max_bytes:
            return
        with self._lock:
            if key in self._entries:
                self._drop(key)
            self._entries[key] = entry
            self._bytes += entry.size
            while self._bytes > self.max_bytes and self._entries:
                self._drop(next(iter(self._entries)))

    def grew(self, key: tuple, entry: CachedTile, before: int) -> None:
        """Account for bytes added to a cached entry (its gzip body, made on demand)."""
        with self._lock:
            if self._entries.get(key) is entry:
                self._bytes += entry.size - before
                while self._bytes > self.max_bytes and self._entries:
                    self._drop(next(iter(self._entries)))

    def _drop(self, key: tuple) -> None:
        entry = self._entries.pop(key)
        self._bytes -= entry.size

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0
