"""A fast reader for the plain YAML front matter cocli writes, with PyYAML as the authority.

PyYAML (even its C loader) spends ~400 µs on a 700-byte ``_index.md``: the C parser builds
Python node objects and the constructor is pure Python. Every cold entity a lookup, a field
write or a compaction touches pays that, and it dominated those paths. cocli's files are a flat
block mapping of one-line scalars and lists of one-line scalars; this module reads exactly that
shape in ~20 µs and returns ``None`` for anything else (nested mappings, multi-line or
double-quoted-with-escapes scalars, anchors, tags, flow collections, tabs, unusual keys...), so
the caller falls back to PyYAML. Plain scalars are typed with PyYAML's own implicit resolvers
(the caller's loader class), so ``null``/``yes``/``12``/``4.6``/``012`` mean what PyYAML says;
a type whose construction is not trivially the same (octal, ``1_000``, ``.inf``, ``<<``) falls
back too. A property test checks: the result is always ``None`` or exactly PyYAML's.
"""

from __future__ import annotations

import re
from typing import Any

_KEY_LINE = re.compile(r"([A-Za-z_][A-Za-z0-9_-]*):(?:[ ]+(.*))?$")
_ITEM_LINE = re.compile(r"([ ]*)- (.*)$")
_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)$")
_FLOAT = re.compile(r"[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+][0-9]+)?$")
_BOOL = {"yes": True, "no": False, "true": True, "false": False, "on": True, "off": False}
_INDICATORS = frozenset("-?:,[]{}#&*!|>'\"%@`")
_FAIL = object()
# Keys repeat in every file: whether PyYAML reads one as a plain string is remembered. (Keyed
# by the key alone: every caller passes the same resolvers, those of document._Loader.)
_PLAIN_KEYS: dict[str, bool] = {}

Resolvers = dict[str | None, list[tuple[str, "re.Pattern[str]"]]]
ByFirst = dict[str | None, tuple[tuple[str, "re.Pattern[str]"], ...]]


def load(text: str, resolvers: Resolvers) -> dict[str, Any] | None:
    """The mapping in ``text``, or None when it is not in the simple shape (use PyYAML)."""
    if "\t" in text or "\r" in text:
        return None
    out: dict[str, Any] = {}
    lines = text.split("\n")
    i, n = 0, len(lines)
    while i < n:
        line = lines[i]
        i += 1
        if not line.strip(" ") or line.startswith("#"):
            continue
        m = _KEY_LINE.match(line)
        if m is None:
            return None
        key, rest = m.groups()
        plain_key = _PLAIN_KEYS.get(key)
        if plain_key is None:
            plain_key = _tag(key, resolvers) is None
            if len(_PLAIN_KEYS) < 4096:
                _PLAIN_KEYS[key] = plain_key
        if key in out or not plain_key:
            return None  # a repeated key, or one PyYAML reads as null/bool/number
        if rest is not None and rest.strip(" "):
            value = _scalar(rest, resolvers)
            if value is _FAIL:
                return None
            out[key] = value
            continue
        # ``key:`` alone: null, or a block sequence of one-line scalars below it.
        items: list[Any] = []
        indent: str | None = None
        while i < n:
            nxt = lines[i]
            if not nxt.strip(" "):
                i += 1
                continue
            if nxt.startswith("#") or (nxt[0] != " " and nxt[0] != "-"):
                break
            im = _ITEM_LINE.match(nxt)
            if im is None or (indent is not None and im.group(1) != indent):
                return None
            indent = im.group(1)
            value = _scalar(im.group(2), resolvers)
            if value is _FAIL:
                return None
            items.append(value)
            i += 1
        out[key] = items if indent is not None else None
    return out or None  # nothing but comments: PyYAML's None, not {}


def _scalar(s: str, resolvers: Resolvers) -> Any:
    s = s.strip(" ")
    if not s or not s.isprintable():
        return _FAIL
    c = s[0]
    if c == "'":
        inner = s[1:-1]
        if len(s) < 2 or s[-1] != "'" or "'" in inner.replace("''", ""):
            return _FAIL
        return inner.replace("''", "'")
    if c == '"':
        inner = s[1:-1]
        if len(s) < 2 or s[-1] != '"' or '"' in inner or "\\" in inner:
            return _FAIL
        return inner
    if c in _INDICATORS or ": " in s or " #" in s or s.endswith(":"):
        return _FAIL
    tag = _tag(s, resolvers)
    if tag is None:
        return s
    kind = tag.rsplit(":", 1)[-1]
    if kind == "null":
        return None
    if kind == "bool":
        return _BOOL.get(s.lower(), _FAIL)
    if kind == "int":
        return int(s) if _INT.match(s) else _FAIL
    if kind == "float":
        return float(s) if _FLOAT.match(s) else _FAIL
    return _FAIL


def _tag(s: str, resolvers: Resolvers) -> str | None:
    """The tag PyYAML's implicit resolvers give a plain scalar; None: a string."""
    table = _BY_FIRST.get(id(resolvers))
    if table is None or table[0] is not resolvers:
        table = _BY_FIRST[id(resolvers)] = (resolvers, _by_first(resolvers))
    for tag, rx in table[1].get(s[0], table[1].get(None, ())):
        if rx.match(s):
            return tag
    return None


def _by_first(resolvers: Resolvers) -> ByFirst:
    """Resolvers by a scalar's first character, the catch-all ones (key None) included."""
    rest = tuple(resolvers.get(None, ()))
    out: ByFirst = {
        ch: (*rs, *rest) for ch, rs in resolvers.items() if ch is not None
    }
    out[None] = rest
    return out


_BY_FIRST: dict[int, tuple[Resolvers, ByFirst]] = {}
