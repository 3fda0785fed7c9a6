"""A fast reader and writer for the plain YAML front matter cocli writes, with PyYAML as the
authority.

PyYAML (even its C loader) spends ~200 µs on the front matter of a 700-byte ``_index.md``: the
C parser builds Python node objects and the constructor is pure Python. Every cold entity a
lookup, a field write or a compaction touches pays that, and it dominated those paths. cocli's
files are a flat block mapping of one-line scalars and lists of one-line scalars; this module
reads exactly that shape in ~20 µs (30 lines) and returns ``None`` for anything else (nested
mappings, multi-line or double-quoted-with-escapes scalars, anchors, tags, flow collections,
tabs, unusual keys...), so the caller falls back to PyYAML. Plain scalars are typed with
PyYAML's own implicit resolvers (the caller's loader class), so ``null``/``yes``/``12``/``4.6``/
``012`` mean what PyYAML says; a type whose construction is not trivially the same (octal,
``1_000``, ``.inf``, ``<<``) falls back too. A property test checks: the result is always
``None`` or exactly PyYAML's.

Python code per line was most of the cost (~3 µs a line), so regexes and whole-text string
checks do the work in C: :func:`_load_dumped` reads the layout yaml_dump writes, :func:`_load_any`
any other text of the shape (comments, blank lines, indented items, padding). Only a value whose
first character an indicator or a resolver claims (quotes, numbers, ``null``...) reaches
:func:`_scalar`; any other is a string as it stands. When the optional C extension
``_fastfront`` is built, it reads yaml_dump's layout instead of :func:`_load_dumped_py` (same
answers, held to each other by the tests): ~21 µs → ~7 µs for a 700-byte ``_index.md`` in a tight
loop, paid by every first field write to an entity.

Writing: an ``_index.md`` with overlay fields is rendered from the base's text with each changed
key dumped again. :func:`dump_entry` writes one ``key: value`` as PyYAML's dump would (plain or
single-quoted strings of safe characters, numbers, bools, null, lists of those) in ~2 µs
instead of ~45, and returns ``None`` for anything else; a property test checks it the same way.
"""

from __future__ import annotations

import re
from typing import Any

_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)$")
_FLOAT = re.compile(r"[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+][0-9]+)?$")
_BOOL = {"yes": True, "no": False, "true": True, "false": False, "on": True, "off": False}
_INDICATORS = "-?:,[]{}#&*!|>'\"%@`"
_FAIL = object()

try:
    from . import _fastfront  # type: ignore[attr-defined]
except ImportError:  # not built (no compiler): the Python reader gives the same answers
    _fastfront = None

Resolvers = dict[str | None, list[tuple[str, "re.Pattern[str]"]]]
# Per first character: (kind, regex), kind being the tag's last part ("int", "null"...).
ByFirst = dict[str | None, tuple[tuple[str, "re.Pattern[str]"], ...]]

# A character of a line: anything but an ASCII control character (\n included). That makes the
# regexes PyYAML's printable check for ASCII text; other text is checked by isprintable.
_CH = r"[ -~\x80-\U0010ffff]"
_CH_NOT_SPACE = r"[!-~\x80-\U0010ffff]"
_CH_NOT_SPACE_COLON = r"[!-9;-~\x80-\U0010ffff]"
# What yaml_dump writes: ``key: value`` (value without padding, not ending in ":"), ``key:``
# and the items below it (``- value``). Anchored at line starts: a line of any other shape is
# skipped by findall, which the caller's line count catches. Possessive spaces, and no
# backtracking but within one line: any text is read in linear time, as by _ANY.
_DUMPED = re.compile(
    rf"""
    ^([A-Za-z_][A-Za-z0-9_-]*):
    (?:
        [ ]++({_CH}*{_CH_NOT_SPACE_COLON})\n
      | \n((?:-[ ](?![ ]){_CH}*{_CH_NOT_SPACE_COLON}\n)*)
    )
    """,
    re.M | re.X,
)
# Any line: key (a ``key:`` line) or dash (an item, with its indent), then the value stripped
# ("" for none); a blank or comment line (PyYAML skips those at any indent) with every group
# empty; bad: any other line, one with a control character included. Every match but bad ends
# at a newline or the end, so findall walks the text line by line. Possessive: padding cannot
# make a line's scan quadratic.
_ANY = re.compile(
    rf"""
        (?:
            ([A-Za-z_][A-Za-z0-9_-]*):(?:[ ]++|(?=\n|\Z))
          | ([ ]*+-)[ ]++
        )
        ((?:[ ]*+{_CH_NOT_SPACE})*+)[ ]*(?:\n|\Z)
      | [ ]*(?:\#{_CH}*)?(?:\n|\Z)
      | ([^\n]+)
    """,
    re.X,
)


class _Table:
    """What load needs for one resolver table, built once."""

    __slots__ = ("by_first", "known", "plain_keys", "resolvers", "unsure", "unsure_ascii")

    def __init__(self, resolvers: Resolvers) -> None:
        self.resolvers = resolvers
        self.by_first = _by_first(resolvers)
        # First characters of a value that may be something else than the string as it stands
        # (None: any, a resolver applies to every first character).
        self.unsure: frozenset[str] | None = None
        # The same as 128 flags for the C reader (None: not usable, an unsure non-ASCII first
        # character would need the set).
        self.unsure_ascii: bytes | None = None
        if not self.by_first[None]:
            self.unsure = frozenset({c for c in resolvers if c} | set(_INDICATORS) | {" "})
            if all(c.isascii() for c in self.unsure):
                self.unsure_ascii = bytes(chr(i) in self.unsure for i in range(128))
        # Keys repeat in every file: those PyYAML reads as plain strings (bounded).
        self.plain_keys: set[str] = set()
        # Short typed values repeat too (null, true, 12, 4.6): value -> what PyYAML makes of it.
        self.known: dict[str, Any] = {}


_TABLES: dict[int, _Table] = {}


def _table(resolvers: Resolvers) -> _Table:
    t = _TABLES.get(id(resolvers))
    if t is None or t.resolvers is not resolvers:
        t = _TABLES[id(resolvers)] = _Table(resolvers)
    return t


def load(text: str, resolvers: Resolvers) -> dict[str, Any] | None:
    """The mapping in ``text``, or None when it is not in the simple shape (use PyYAML)."""
    # Tabs, CRs and other non-printables (\x85, \u2028: PyYAML line breaks, even in a comment).
    # ASCII text: the regexes refuse control characters, no need for a pass over the text.
    if not text.isascii() and not text.replace("\n", "").isprintable():
        return None
    t = _table(resolvers)
    out = _load_dumped(text, t)
    if out is None:
        out = _load_any(text, t)
        if out is None:
            return None
    if not t.plain_keys.issuperset(out):
        for k in out:
            if k not in t.plain_keys:
                if _tag(k, t.by_first) is not None:
                    return None  # a key PyYAML reads as null/bool/number
                if len(k) > 1024:
                    return None  # PyYAML refuses a simple key this long
                if len(t.plain_keys) < 4096:
                    t.plain_keys.add(k)
    return out or None  # nothing but comments: PyYAML's None, not {}


def _load_dumped(text: str, t: _Table) -> dict[str, Any] | None:
    """Text in yaml_dump's layout, or None."""
    if _fastfront is None or t.unsure_ascii is None:
        return _load_dumped_py(text, t)
    if t.unsure is None or text[-1:] != "\n" or " #" in text:
        return None  # the whole-text checks _load_dumped_py makes too
    out: dict[str, Any] | None = _fastfront.load_dumped(
        text, t.unsure_ascii, t.known, _scalar, t, _FAIL
    )
    return out


def _load_dumped_py(text: str, t: _Table) -> dict[str, Any] | None:
    """:func:`_load_dumped` in Python. What a line regex would check per value (no " #", no
    ": ") or per line (that it was read) is checked once, on the whole text."""
    unsure = t.unsure
    if unsure is None or text[-1:] != "\n" or " #" in text:
        return None
    out: dict[str, Any] = {}
    lists = lines = 0
    rows = _DUMPED.findall(text)
    for key, value, block in rows:
        if value:
            if value[0] in unsure:
                value = _scalar(value, t)
                if value is _FAIL:
                    return None
            out[key] = value
            continue
        lists += 1
        if block:
            items: list[Any] = block[2:-1].split("\n- ")
            lines += len(items)
            for i, item in enumerate(items):
                if item[0] in unsure:
                    item = items[i] = _scalar(item, t)
                    if item is _FAIL:
                        return None
            out[key] = items
        else:
            out[key] = None
    if (
        len(out) != len(rows)  # a repeated key
        or text.count("\n") != len(rows) + lines  # a line of another shape
        or text.count(": ") != len(rows) - lists  # a ": " inside a value
    ):
        return None
    return out


def _load_any(text: str, t: _Table) -> dict[str, Any] | None:
    """Any text in the simple shape, or None."""
    out: dict[str, Any] = {}
    keys = 0
    items: list[Any] | None = None  # the list under the last ``key:``, while items may follow
    list_key = indent = ""
    for key, dash, value, bad in _ANY.findall(text):
        if key:
            keys += 1
            items = None
            if not value:  # ``key:`` alone: null, or a block sequence below it
                out[key] = None
                items, list_key, indent = [], key, ""
                continue
            value = _scalar(value, t)
            if value is _FAIL:
                return None
            out[key] = value
        elif dash:
            if items is None:
                return None  # an item under ``key: value``, or a top-level sequence
            if not items:
                out[list_key], indent = items, dash
            elif dash != indent:
                return None
            value = _scalar(value, t)
            if value is _FAIL:
                return None
            items.append(value)
        elif bad:
            return None
    if len(out) != keys:
        return None  # a repeated key
    return out


def _scalar(s: str, t: _Table) -> Any:
    """A stripped one-line value as PyYAML constructs it, or _FAIL (text checked printable)."""
    if not s:
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
    if c in _INDICATORS or ": " in s or " #" in s or s[-1] == ":":
        return _FAIL
    value = t.known.get(s, _FAIL)
    if value is _FAIL:
        value = _typed(s, _tag(s, t.by_first))
        if value is not _FAIL and len(s) <= 16:
            if len(t.known) >= 4096:
                t.known.clear()
            t.known[s] = value
    return value


def _typed(s: str, kind: str | None) -> Any:
    if kind is None:
        return s
    if kind == "null":
        return None
    if kind == "bool":
        return _BOOL.get(s.lower(), _FAIL)
    if kind == "int":
        return int(s) if _INT.match(s) else _FAIL
    if kind == "float":
        return float(s) if _FLOAT.match(s) else _FAIL
    return _FAIL


def _tag(s: str, by_first: ByFirst) -> str | None:
    """The kind of tag PyYAML's implicit resolvers give a plain scalar; None: a string."""
    for kind, rx in by_first.get(s[0], by_first[None]):
        if rx.match(s):
            return kind
    return None


def _by_first(resolvers: Resolvers) -> ByFirst:
    """Resolvers by a scalar's first character, the catch-all ones (key None) included."""
    rest = tuple(resolvers.get(None, ()))
    out: dict[str | None, tuple[tuple[str, re.Pattern[str]], ...]] = {
        ch: (*rs, *rest) for ch, rs in resolvers.items() if ch is not None
    }
    out[None] = rest
    return {ch: tuple((tag.rsplit(":", 1)[-1], rx) for tag, rx in rs) for ch, rs in out.items()}


# --- writing ------------------------------------------------------------------------------------

# Characters of a string this writer emits itself: printable ASCII but for quotes, backquote,
# backslash, brackets and braces (anything else is left to PyYAML). Within these, YAML's
# emitter only chooses between plain and single-quoted style, and quoting needs no escapes.
_WRITABLE = re.compile(r"[ !#-&(-Z^-z|~]*\Z")
_MAX_WRITTEN = 4096  # longer strings go to PyYAML (they fold at its width)
_PLAIN_FIRST = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./+(;=$^~")


def dump_entry(key: str, value: Any, resolvers: Resolvers) -> str | None:
    """``key: value`` as PyYAML's block-style dump of ``{key: value}`` writes it (no line
    wrapping: the caller dumps with a huge width), or None when the value is not a string,
    number, bool, None or list of those in the simple shape (use PyYAML). PyYAML costs ~45 µs
    a call, most of it building a dumper; a property test checks: None or exactly PyYAML's."""
    if len(key) > 128:
        return None  # PyYAML writes a longer key as a complex key ("? key")
    k = _str(key, resolvers)
    if k is None or k != key:  # a key PyYAML would quote: let it
        return None
    if isinstance(value, list):
        if not value:
            return f"{k}: []\n"
        items = [_value(v, resolvers) for v in value]
        if None in items:
            return None
        return f"{k}:\n" + "".join(f"- {i}\n" for i in items)
    v = _value(value, resolvers)
    return None if v is None else f"{k}: {v}\n"


def _value(value: Any, resolvers: Resolvers) -> str | None:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    t = type(value)
    if t is str:
        return _str(value, resolvers)
    if t is int:
        return str(value)
    if t is float:
        r = repr(value)
        return r if "." in r and "e" not in r and "n" not in r else None  # not inf, nan, 1e+20
    return None


def _str(s: str, resolvers: Resolvers) -> str | None:
    """A one-line string as PyYAML writes it: plain, or single-quoted; None: let PyYAML."""
    if len(s) > _MAX_WRITTEN or not _WRITABLE.match(s):
        return None  # long strings: PyYAML folds them at its line width (2**16)
    if not s:
        return "''"
    if s[0] not in _PLAIN_FIRST:
        return None  # "-x" and "?x" are plain, "- x" and "? x" not: PyYAML decides
    if (
        s[-1] != " "
        and s[-1] != ":"
        and ": " not in s
        and " #" not in s
        and not s.startswith(("---", "..."))
        and _tag(s, _table(resolvers).by_first) is None  # reads back as this string
    ):
        return s
    return f"'{s}'"
