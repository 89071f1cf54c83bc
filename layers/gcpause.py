"""Pausing the cyclic garbage collector around bulk object building."""

from __future__ import annotations

import gc
from contextlib import contextmanager


@contextmanager
def no_gc():
    """Building hundreds of thousands of small objects (rows, dicts, lists) triggers
    collections that scan them all again and again; code that makes no reference cycles
    can pause the collector meanwhile (process-wide, so keep the block short)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
