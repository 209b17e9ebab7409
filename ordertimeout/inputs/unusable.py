"""When no line of a run is usable: why, the fields the lines do have, and the options
that would probably fit them (``try --key user_id --type-field kind``).

Only a run that ends with nothing usable comes here; the parser itself stays lean.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

import orjson

from ..rules.events import MISSING, EventSchema, field_getter
from .hints import unit_hint

__all__ = ["describe_unusable", "describe_no_orders"]

#: Field names (lower case, without ``_`` and ``-``) that usually hold each role.
_ROLE_NAMES = {
    "key": ("userid", "user", "customerid", "customer", "accountid", "account", "clientid", "buyerid", "memberid", "key"),
    "type": ("type", "kind", "eventtype", "event", "action", "eventname", "status"),
    "time": ("ts", "timestamp", "time", "at", "eventtime", "datetime", "date", "createdat", "when"),
}


def describe_unusable(count: int, reason: str, samples: list[bytes], schema: EventSchema,
                      source: str | None = None) -> str:
    """Why a run had no usable line, and what to try: the fields the lines do have, and
    the ``--key``/``--type-field``/``--time-field`` that would probably fit, e.g.
    ``13 lines, none usable: no key field 'userId' (the lines have: user_id, kind, at);
    try --key user_id --type-field kind --time-field at``.

    ``reason`` is the most common rejection, ``samples`` some of the rejected lines (the
    first ones), ``source`` the one file read, if one was. Input in another format (a JSON
    array, pretty-printed JSON, CSV) is named, with the ``jq`` that converts it; numeric
    times that fit another ``--time-unit`` get that unit.
    """
    text = f"{count:,} line{'' if count == 1 else 's'}, none usable: {reason}"
    other_format = _other_format(samples, source)
    if other_format is not None:
        return f"{text}; {other_format}"
    objects = []
    for raw in samples:
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if type(obj) is dict:
            objects.append(obj)
    if not objects:
        return text
    names = list(dict.fromkeys(name for obj in objects for name in obj))
    if not names:
        return text
    shown = names[:12] + (["..."] if len(names) > 12 else [])
    text += f" (the lines have: {', '.join(shown)})"
    tries = []
    for role, option, wanted in (("key", "--key", schema.key_field), ("type", "--type-field", schema.type_field),
                                 ("time", "--time-field", schema.time_field)):
        if any(field_getter(wanted)(obj) is not MISSING for obj in objects):
            continue  # the configured field is there: nothing to suggest
        guess = _guess_field(role, names, objects, schema, taken={*tries})
        if guess is not None:
            tries.append(f"{option} {guess}")
    if tries:
        text += "; try " + " ".join(tries)
    for obj in objects:
        value = field_getter(schema.time_field)(obj)
        hint = None if value is MISSING else unit_hint(value, schema.time_unit)
        if hint is not None:
            return f"{text}; {hint}"
    return text


def _other_format(samples: list[bytes], source: str | None) -> str | None:
    """What the input is, when it is not JSON Lines, and how to convert it."""
    lines = [raw.strip() for raw in samples if raw.strip()]
    if not lines:
        return None
    first = lines[0]
    file = _shell_word(source) if source else "FILE"
    expects = "ordertimeout expects JSON Lines: one object per line"
    if first.startswith(b"["):
        return f"this looks like a JSON array; {expects}; convert it: jq -c '.[]' {file} | ordertimeout watch"
    if first.startswith(b"{") and not _is_json(first):
        return f"this looks like pretty-printed JSON; {expects}; convert it: jq -c . {file} | ordertimeout watch"
    if not _is_json(first) and b"," in first:
        return f"this looks like CSV or other text; {expects}"
    return None


def _is_json(raw: bytes) -> bool:
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    return True


def _shell_word(text: str) -> str:
    import shlex  # only when a run had nothing usable

    return shlex.quote(text)


def describe_no_orders(stats: dict, schema: EventSchema) -> str | None:
    """Why a run whose events were all usable opened no order, if that is what happened:
    ``no event was a create: none of 3,000 events had type 'created' in field 'type'
    (1,200 were pays, 1,800 other types); see --create-type and --type-field``.
    None when some event was a create, or there were no events."""
    events, creates = stats.get("events", 0), stats.get("creates", 0)
    if not events or creates:
        return None
    text = (f"no event was a create: none of {events:,} event{'' if events == 1 else 's'} had type "
            f"{schema.create_type!r} in field {schema.type_field!r}")
    kinds = [f"{count:,} {name}" for count, name in ((stats.get("pays", 0), "pays"), (stats.get("cancels", 0), "cancels"),
                                                      (stats.get("other", 0), "other types")) if count]
    if kinds:
        text += f" ({', '.join(kinds)})"
    return text + "; see --create-type and --type-field"


def _guess_field(role: str, names: list[str], objects: list[dict], schema: EventSchema, taken: set) -> str | None:
    """The field most likely to hold ``role`` (key, type or time), by its values, then its name."""
    def values(name: str) -> list:
        return [obj[name] for obj in objects if name in obj]

    candidates = [name for name in names if not any(option.endswith(" " + name) for option in taken)]
    if role == "type":
        wanted = {schema.create_type, schema.pay_type}
        for name in candidates:
            if wanted & {value for value in values(name) if isinstance(value, str)}:
                return name
    if role == "time":
        for name in candidates:
            found = values(name)
            if found and all(_looks_like_time(value) for value in found):
                if _normal(name) in _ROLE_NAMES["time"] or len(candidates) == 1:
                    return name
    by_name = {_normal(name): name for name in candidates}
    for known in _ROLE_NAMES[role]:
        if known in by_name:
            return by_name[known]
    if role == "key":
        for name in candidates:
            if "user" in name.lower() or "customer" in name.lower():
                return name
    return None


def _normal(name: str) -> str:
    return name.lower().replace("_", "").replace("-", "")


def _looks_like_time(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    if isinstance(value, str):
        try:
            _dt.datetime.fromisoformat(value)
        except ValueError:
            return False
        return True
    return False
