"""Reading a state file without touching it: the open orders of its last checkpoint.

For ``ordertimeout pending``: the file is opened read-only (an SQLite ``mode=ro`` URI), so
a reader never writes, creates or locks it for writing, and a service using the file goes
on undisturbed. Apart from :mod:`.store` on purpose: the store owns writing and locking.
"""

from __future__ import annotations

import sqlite3
import urllib.parse
from dataclasses import dataclass

import orjson

from ..errors import StateError
from ..rules.orders import PACKED_RAW, OpenOrder

__all__ = ["SavedOrders", "read_open_orders"]


@dataclass(frozen=True)
class SavedOrders:
    """The open orders of a checkpoint and what gives them meaning."""

    orders: list[OpenOrder]  #: in deadline order
    within: int  #: the plain window (ms)
    remind: tuple[int, ...]
    remind_before: tuple[int, ...]
    time_mode: str | None  #: "event" or "processing" (None before the first event)
    now: int | None  #: the time the rules had reached at the checkpoint (ms), if any


def read_open_orders(path: str, key: str | None = None) -> SavedOrders:
    """The open orders (of ``key`` only, if given) of the state file at ``path``, from its
    last checkpoint, read-only. Raises :class:`StateError` for a file that cannot be read."""
    uri = "file:" + urllib.parse.quote(path) + "?mode=ro"
    try:
        connection = sqlite3.connect(uri, uri=True, timeout=2.0)
    except sqlite3.Error as error:
        raise StateError(f"cannot open state file {path}: {error}") from None
    try:
        meta = dict(connection.execute("SELECT name, value FROM meta"))
        # Format 4 keeps each order packed (a header of PACKED_RAW bytes before the raw
        # event); a service of an older version may still be writing format 3.
        raw = "raw" if meta.get("format") == "3" else f"substr(packed, {PACKED_RAW + 1})"
        query = f"SELECT created, key, {raw}, seq, deadline FROM open_orders"
        rows = connection.execute(query + " WHERE key = ?", (key,)) if key is not None else connection.execute(query)
        orders = [OpenOrder(created, key_text, bytes(raw), seq, deadline) for created, key_text, raw, seq, deadline in rows]
    except sqlite3.DatabaseError as error:
        raise StateError(_why(path, error)) from None
    finally:
        connection.close()
    if "config" not in meta:
        raise StateError(f"{path} is not an ordertimeout state file")
    config = orjson.loads(meta["config"])
    pipeline = orjson.loads(meta["pipeline"]) if "pipeline" in meta else {}
    matcher = pipeline.get("matcher", {})
    orders.sort(key=lambda order: (order.deadline, order.created))
    return SavedOrders(
        orders, matcher.get("within") or config.get("within_ms") or 1000,
        tuple(matcher.get("remind") or ()), tuple(matcher.get("remind_before") or ()),
        pipeline.get("time_mode"), matcher.get("now"),
    )


def _why(path: str, error: sqlite3.DatabaseError) -> str:
    text = str(error)
    if "locked" in text:
        return (f"state file {path} is locked by the ordertimeout using it (its exclusive lock): "
                "read it again once that run allows readers or has stopped")
    if "no such table" in text or "not a database" in text:
        return f"{path} is not an ordertimeout state file"
    return f"cannot read state file {path}: {text}"
