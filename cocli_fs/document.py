"""Entity documents: ``_index.md`` (YAML front matter + Markdown body) and ``tags.lst``.

An entity is a flat mapping of fields: the front-matter keys, ``description`` (the Markdown
body, as cocli stores it) and ``tags`` (``tags.lst``, one tag a line; or a front-matter ``tags``
key when there is no ``tags.lst``). These are plain functions: parse, merge with the overlay,
render, and diff an edited document into per-field changes.

Rendering keeps the base's bytes where it can: an entity without overlay entries is served
verbatim, and with overlay entries only the changed top-level keys are re-serialised; every
untouched key keeps its text, comments and position.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import yaml

from . import frontmatter
from .record import KIND_TOMBSTONE, Record, RecordError, check_text, decode_value, encode_value

DESCRIPTION = "description"
TAGS = "tags"
INDEX = "_index.md"
TAGS_FILE = "tags.lst"


class DocumentError(ValueError):
    """An edited document that cannot be turned into field values (bad YAML, wrong shape)."""


class TOMBSTONE_TYPE:
    """Marker for "delete this field" in a diff."""

    _instance: TOMBSTONE_TYPE | None = None

    def __new__(cls) -> TOMBSTONE_TYPE:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "TOMBSTONE"


TOMBSTONE = TOMBSTONE_TYPE()
Change = Any  # a field value, or TOMBSTONE


# YAML: keep dates and times as the strings they were written as (cocli's files carry them as
# text, and a date object cannot travel in a journal record without changing type).
_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DumperBase: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _Loader(_Base):  # type: ignore[misc]
    pass


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for ch, resolvers in _Base.yaml_implicit_resolvers.items()
}


def yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


_DUMP_RESOLVERS = _DumperBase.yaml_implicit_resolvers


def yaml_dump_entry(key: str, value: Any) -> str:
    """``yaml_dump({key: value})``, from the fast writer when it can (``frontmatter``)."""
    return frontmatter.dump_entry(key, value, _DUMP_RESOLVERS) or yaml_dump({key: value})


def yaml_dump(data: Mapping[str, Any]) -> str:
    out: str = yaml.dump(
        dict(data),
        Dumper=_DumperBase,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=1 << 16,
    )
    return out


# --- parsing ------------------------------------------------------------------------------------


@dataclass
class BaseDoc:
    """What the backing store holds for one entity."""

    front_text: str | None = None  # raw YAML between the --- lines; None: no front matter
    front: dict[str, Any] = field(default_factory=dict)
    body: str = ""
    tags: list[str] | None = None  # from tags.lst; None when there is no tags.lst
    has_index: bool = False  # the store had an _index.md (tags.lst: tags is not None)
    # tags.lst was read (``tags`` is known). A write of one field other than tags needs only
    # _index.md: tags.lst is read when something asks for all fields or for tags.
    tags_read: bool = True

    def packed(self) -> tuple[Any, ...]:
        """The fields in declaration order, for ``BaseDoc(*packed)`` in another process
        (``helper.BASE``: marshal carries plain types only)."""
        return (self.front_text, self.front, self.body, self.tags, self.has_index,
                self.tags_read)

    @cached_property
    def chunks(self) -> dict[str, str] | None:
        """The front matter's text per top-level key, or None when it cannot be cut. Cut on
        first use: every render after an overlay change of the entity reuses it."""
        c = _chunks(self.front_text) if self.front_text else None
        return c if c is not None and list(c) == list(self.front) else None

    def _description(self) -> str | None:
        """The field ``description`` (the body without its framing newlines); None when
        there is none: an empty body is no field unless the front matter names it."""
        desc = self.body.strip("\n")
        return desc if desc or DESCRIPTION in self.front else None

    def field(self, name: str) -> tuple[bool, Any]:
        """(present, value) of one field, as ``fields()`` has it (tags need ``tags_read``)."""
        if name == DESCRIPTION:
            desc = self._description()
            return desc is not None, desc
        if name == TAGS:
            assert self.tags_read, "tags of a base whose tags.lst was not read"
            if self.tags is not None:
                return True, list(self.tags)
        return (True, self.front[name]) if name in self.front else (False, None)

    def fields(self, tags: bool = True) -> dict[str, Any]:
        """Every field; ``tags=False``: all but those of tags.lst (unread, or not wanted)."""
        assert self.tags_read or not tags, "fields() of a base whose tags.lst was not read"
        out = dict(self.front)
        desc = self.body.strip("\n")
        if desc or DESCRIPTION in out:
            out[DESCRIPTION] = desc
        if tags and self.tags is not None:
            out[TAGS] = list(self.tags)
        return out


# The closing line: ``---`` or ``...``, then only CRs and spaces. One search from the newline
# that ends the opening line (its leading "\n" lets the regex engine skip to newlines).
_FRONT_END = re.compile(r"\n(?:---|\.\.\.)[\r ]*+(?=\n|\Z)")


def split_front_matter(text: str) -> tuple[str | None, str]:
    """``---\\n<yaml>---\\n<body>`` -> (yaml, body). No leading ``---`` line: no front matter."""
    if not (text.startswith("---\n") or text.startswith("---\r\n")):
        return None, text
    start = text.index("\n") + 1
    end = _FRONT_END.search(text, start - 1)
    if end is None:
        raise DocumentError("front matter is not closed by a '---' line")
    return text[start : end.start() + 1], text[end.end() + 1 :]


_DESCRIPTION_KEY = "'description' is the Markdown body, not a front-matter key"


def parse_index(text: str) -> BaseDoc:
    front_text, body = split_front_matter(text)
    front: dict[str, Any] = {}
    if front_text is not None and front_text.strip():
        # The fast reader for cocli's plain shape, PyYAML for the rest; keys from the fast
        # reader are plain non-empty strings already.
        data = frontmatter.load(front_text, _Loader.yaml_implicit_resolvers)
        if data is None:
            try:
                data = yaml_load(front_text)
            except yaml.YAMLError as exc:
                mark = getattr(exc, "problem_mark", None)
                where = f" (line {mark.line + 2})" if mark is not None else ""
                raise DocumentError(f"invalid YAML front matter{where}: {exc}") from None
            if data is None:
                data = {}
            if not isinstance(data, dict):
                raise DocumentError("front matter must be a mapping of field: value")
            for key in data:
                if not isinstance(key, str) or not key:
                    raise DocumentError(f"front-matter key {key!r} is not a non-empty string")
                if key == DESCRIPTION:
                    raise DocumentError(_DESCRIPTION_KEY)
        elif DESCRIPTION in data:  # its keys are non-empty strings
            raise DocumentError(_DESCRIPTION_KEY)
        front = data
    return BaseDoc(front_text=front_text, front=front, body=body)


def parse_tags(text: str) -> list[str]:
    return [t.strip() for t in text.splitlines() if t.strip()]


def decode_text(data: bytes) -> str:
    """A file's bytes as text with universal newlines; DocumentError when not UTF-8."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A broken base, as invalid YAML is (shown_base): never an error out of a request.
        raise DocumentError(f"not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def decode_tags(data: bytes | None, problems: list[tuple[str, str]]) -> str | None:
    """tags.lst's text (None: no such file). One that is not UTF-8 counts as none, so it does
    not hide the fields of ``_index.md``; why goes to ``problems`` as (file name, why)."""
    if data is None:
        return None
    try:
        return decode_text(data)
    except DocumentError as exc:
        problems.append((TAGS_FILE, str(exc)))
        return None


def shown_base_of(files: list[bytes | None], tags: bool) -> tuple[BaseDoc, list[tuple[str, str]]]:
    """The base document to show from the bytes of ``_index.md`` and, with ``tags``,
    ``tags.lst`` (None: no such file), and what the log should say about a file it could not
    use, as (file name, why). A broken ``_index.md`` must not hide the overlay, so it counts as
    empty; a ``tags.lst`` that is not text counts as none, so it does not hide the fields of
    ``_index.md``. Pure: the helper process runs it for the event loop (``helper.BASE``)."""
    problems: list[tuple[str, str]] = []
    tags_text = decode_tags(files[1], problems) if len(files) > 1 else None
    try:
        index = files[0]
        doc = load_base(decode_text(index) if index is not None else None, tags_text)
    except DocumentError as exc:
        problems.append((INDEX, str(exc)))
        return BaseDoc(), problems
    doc.tags_read = tags
    return doc, problems


def load_base(index_text: str | None, tags_text: str | None) -> BaseDoc:
    doc = parse_index(index_text) if index_text is not None else BaseDoc()
    doc.has_index = index_text is not None
    if tags_text is not None:
        doc.tags = parse_tags(tags_text)
    elif TAGS in doc.front and isinstance(doc.front[TAGS], list):
        doc.tags = None  # tags live in the front matter for this entity
    return doc


# --- merging ------------------------------------------------------------------------------------


def same_value(a: Any, b: Any) -> bool:
    """Equal as stored in a journal (so 5 and 5.0, or a list and its copy, compare equal)."""
    if a is b:
        return True
    try:
        return encode_value(a) == encode_value(b)
    except RecordError:
        return bool(a == b)


def merge(base: BaseDoc, overlay: Mapping[str, Record], tags: bool = True) -> dict[str, Any]:
    """Base fields with the overlay's winners applied (tombstones remove). Keys keep the base's
    order; fields the overlay adds follow in name order, so every node renders alike.
    ``tags=False``: without tags.lst's tags (``BaseDoc.fields``)."""
    fields = base.fields(tags)
    if not overlay:
        return fields
    added = []
    for name in sorted(overlay):
        r = overlay[name]
        if r.kind == KIND_TOMBSTONE:
            fields.pop(name, None)
        elif name in fields:
            fields[name] = decode_value(r.kind, r.value)
        else:
            added.append((name, decode_value(r.kind, r.value)))
    fields.update(added)
    return fields


# --- rendering ----------------------------------------------------------------------------------


_PLAIN_KEY = re.compile(r"([A-Za-z_][A-Za-z0-9_.-]*):(?:[ \t]|\r?\n|$)")


def _chunks(front_text: str) -> dict[str, str] | None:
    """Split front matter into the text of each top-level key, or None if it is not a plain
    block mapping we can cut safely (then the caller re-serialises everything)."""
    chunks: dict[str, str] = {}
    key: str | None = None
    lines: list[str] = []
    lead: list[str] = []  # comments/blank lines before the first key
    for line in front_text.splitlines(keepends=True):
        starts_key = line[:1] not in ("", " ", "\t", "#", "-", "\n", "\r")
        if starts_key:
            if key is not None:
                chunks[key] = "".join(lines)
            plain = _PLAIN_KEY.match(line)
            if plain:
                # The common case, without a YAML parse per line: for such a line YAML's key is
                # exactly this text (reserved words like ``yes`` never get here: parse_index
                # refuses non-string keys).
                key = plain.group(1)
                lines = [line]
                continue
            try:
                parsed = yaml_load(line if ":" in line else "")
            except yaml.YAMLError:
                parsed = None
            if isinstance(parsed, dict) and len(parsed) == 1:
                key = next(iter(parsed))
            else:
                # A multi-line key or value on the key line itself: give up on cutting.
                colon = line.find(":")
                if colon <= 0:
                    return None
                key = line[:colon].strip().strip("'\"")
            lines = [line]
        elif key is None:
            lead.append(line)
        else:
            lines.append(line)
    if key is not None:
        chunks[key] = "".join(lines)
    if lead and any(ln.strip() for ln in lead):
        return None
    return chunks


def render_index(base: BaseDoc, merged: Mapping[str, Any]) -> str:
    """The ``_index.md`` a reader sees for the merged fields."""
    keep_tags_in_front = TAGS in base.front
    front_keys = [
        k for k in merged if k != DESCRIPTION and (k != TAGS or keep_tags_in_front)
    ]
    chunks = base.chunks
    parts: list[str] = []
    for k in front_keys:
        v = merged[k]
        if chunks is not None and k in chunks and k in base.front and same_value(
            base.front[k], v
        ):
            text = chunks[k]
            parts.append(text if text.endswith("\n") else text + "\n")
        else:
            parts.append(yaml_dump_entry(k, v))
    desc = merged.get(DESCRIPTION)
    # No description: a base body of blank lines only is that same empty description, so its
    # bytes stay; a real body is gone (its description was deleted).
    blank = base.body if not base.body.strip("\n") else ""
    body = _body(base, desc) if desc is not None else blank
    if base.front_text is None and not front_keys:
        return body
    return "---\n" + "".join(parts) + "---\n" + body


def _body(base: BaseDoc, desc: Any) -> str:
    if not isinstance(desc, str):
        desc = json.dumps(desc, ensure_ascii=False)
    if desc == base.body.strip("\n"):
        return base.body  # unchanged: keep its exact surrounding blank lines
    return "\n" + desc + "\n" if desc else ""


def render_tags(tags: Any) -> str:
    if not isinstance(tags, list):
        tags = [tags]
    return "".join(f"{t}\n" for t in tags)


# --- the _fields/ view --------------------------------------------------------------------------


def field_text(name: str, value: Any) -> str:
    """Contents of ``_fields/<name>``: plain text for strings, JSON for everything else, and
    always one newline more (which ``parse_field_text`` takes off again, so a value that itself
    ends in a newline survives a round trip)."""
    if isinstance(value, str):
        return value + "\n"
    return json.dumps(value, ensure_ascii=False) + "\n"


def parse_field_text(name: str, text: str, current: Any = None) -> Any:
    """What a write to ``_fields/<name>`` means. One trailing newline (what ``echo`` adds) is
    not part of the value; JSON lists and dicts are structured values; a field that held a
    number or boolean keeps that type when the new text parses as one."""
    check_text(name, text)
    if name == DESCRIPTION:
        return text.strip("\n")
    s = text[:-1] if text.endswith("\n") else text
    stripped = s.strip()
    if stripped[:1] in ("[", "{"):
        try:
            return json.loads(stripped)
        except ValueError:
            if name == TAGS:
                raise DocumentError("tags must be a JSON list or one tag a line") from None
    if name == TAGS:
        return parse_tags(s)
    if current is not None and not isinstance(current, str):
        try:
            v = json.loads(stripped)
        except ValueError:
            return s
        if not isinstance(v, (list, dict)):
            return v
    return s


# --- diffing ------------------------------------------------------------------------------------


def diff(old: Mapping[str, Any], new: Mapping[str, Any], scope: set[str] | None = None) -> dict[
    str, Change
]:
    """Per-field changes turning ``old`` into ``new``: set for changed or added fields,
    TOMBSTONE for fields that were in ``old`` (and in ``scope``, if given) and are gone."""
    changes: dict[str, Change] = {}
    for k, v in new.items():
        if k not in old or not same_value(old[k], v):
            changes[k] = v
    for k in old:
        if k not in new and (scope is None or k in scope):
            changes[k] = TOMBSTONE
    return changes


def index_fields(doc: BaseDoc) -> dict[str, Any]:
    """Fields an edited ``_index.md`` speaks for: its front-matter keys and its body."""
    out = dict(doc.front)
    out[DESCRIPTION] = doc.body.strip("\n")
    return out


def diff_index(
    merged: Mapping[str, Any], edited_text: str, tags_in_front: bool
) -> dict[str, Change]:
    """Changes made by writing ``edited_text`` as ``_index.md`` over the merged state.

    Only fields the document shows can be removed by leaving them out: ``tags`` lives in
    ``tags.lst`` unless the front matter carries it. An empty body removes ``description``.
    """
    doc = parse_index(edited_text)
    new = index_fields(doc)
    if not new.get(DESCRIPTION):
        new.pop(DESCRIPTION)
    # An empty description and no description read the same (an empty body): re-saving the
    # document unchanged must not turn one into the other.
    scope = {
        k
        for k in merged
        if (k != TAGS or tags_in_front) and not (k == DESCRIPTION and merged[k] == "")
    }
    return diff(merged, new, scope)
