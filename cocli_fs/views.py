"""The merged view of one entity as the mount shows it, rendered once and cached per target.

Rendering parses the base ``_index.md`` (YAML) and applies the overlay; that costs far more than
a FUSE round trip, so the result (bytes and exact sizes of ``_index.md``, ``tags.lst`` and every
``_fields/<f>``) is kept until the entity changes (``drop``, called from the state listeners).
An entity without overlay entries is served from its base files verbatim and needs no view
except for its ``_fields/`` folder.

The parsed base document is kept apart from the overlay merge: a journal record changes only
the overlay, so ``drop(target, base=False)`` (what the record listeners call) keeps the parsed
base and the next ``get`` only re-merges and re-renders — no YAML parse per field write. A
change of the store files themselves (``drop`` with ``base=True``, the default) parses again.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from .document import INDEX, TAGS, TAGS_FILE, BaseDoc, field_text, merge, render_index, render_tags
from .hlc import physical_ms
from .record import Record
from .state import NodeState


class EntityView:
    """One entity as shown; ``_index.md`` / ``tags.lst`` bytes are rendered on first use (a
    field write needs only the merged fields, not a YAML dump of the whole document)."""

    __slots__ = (
        "_field_bytes", "_index", "_tags", "base", "complete", "fields", "mtime_ns", "overlay"
    )

    def __init__(self, base: BaseDoc, fields: dict[str, Any], overlay: bool, mtime_ns: int,
                 complete: bool = True) -> None:
        self.base = base
        self.fields = fields  # merged
        self.overlay = overlay  # the overlay touches this entity (else base files are verbatim)
        self.mtime_ns = mtime_ns  # newest overlay record (0: none)
        # False: built without tags.lst, for _index.md alone (Views.index_bytes); its fields
        # lack tags.lst's tags, so nothing else may use it (Views.get builds it again).
        self.complete = complete
        self._index: bytes | bool | None = False  # False: not rendered yet
        self._tags: bytes | bool | None = False
        self._field_bytes: dict[str, bytes] = {}

    @property
    def index(self) -> bytes | None:
        """Rendered ``_index.md`` (None: none to show, or no overlay: the base file is served)."""
        if self._index is False:
            show = self.overlay and (self.fields or self.base.front_text)
            self._index = render_index(self.base, self.fields).encode("utf-8") if show else None
        assert not isinstance(self._index, bool)
        return self._index

    @property
    def tags(self) -> bytes | None:
        """Rendered ``tags.lst`` when it is not a plain base file."""
        if self._tags is False:
            show = self.overlay and TAGS in self.fields and TAGS not in self.base.front
            self._tags = render_tags(self.fields[TAGS]).encode("utf-8") if show else None
        assert not isinstance(self._tags, bool)
        return self._tags

    @property
    def tags_in_front(self) -> bool:
        return TAGS in self.base.front

    def field_bytes(self, name: str) -> bytes | None:
        b = self._field_bytes.get(name)
        if b is None:
            if name not in self.fields:
                return None
            b = self._field_bytes[name] = field_text(name, self.fields[name]).encode("utf-8")
        return b

    def field_names(self) -> list[str]:
        return list(self.fields)


class Views:
    def __init__(self, state: NodeState, capacity: int = 16384) -> None:
        self.state = state
        self.capacity = capacity
        self._cache: OrderedDict[str, EntityView] = OrderedDict()
        # Parsed base documents, kept across overlay changes (LRU, same capacity).
        self._bases: OrderedDict[str, BaseDoc] = OrderedDict()
        self.gen: dict[str, int] = {}  # bumped on every change of a target (keep_cache checks)

    def loaded(self, target: str) -> bool:
        """Its base files are parsed already (a view or the base is cached)."""
        return target in self._cache or target in self._bases

    def in_store(self, target: str, name: str) -> bool | None:
        """Did the store hold ``_index.md`` / ``tags.lst`` when the base parsed now was read?
        None: not known (no base parsed, or a broken one shown as empty)."""
        b = self._bases.get(target)
        if b is None:
            v = self._cache.get(target)
            b = v.base if v is not None else None
        if b is None or not b.has_index:
            return None
        if name == INDEX:
            return True
        return (b.tags is not None) if name == TAGS_FILE and b.tags_read else None

    def has_overlay(self, target: str) -> bool:
        return bool(self.state.overlay.get(target))

    def get(self, target: str) -> EntityView:
        v = self._cache.get(target)
        if v is not None and v.complete:
            self._cache.move_to_end(target)
            return v
        return self._keep(target, self._build(target))

    def field_value(self, target: str, name: str) -> tuple[bool, Any]:
        """(present, merged value) of one field, without merging or rendering the rest (nor
        reading tags.lst, unless the field is tags): what a field write needs."""
        v = self._view_with(target, name)
        if v is not None:
            return name in v.fields, v.fields.get(name)
        r = self.state.overlay.get(target).get(name)
        if r is not None:
            return (False, None) if r.tombstone else (True, r.decoded_value())
        return self._base(target, tags=name == TAGS).field(name)

    def reads_store(self, target: str, name: str) -> bool:
        """Would ``field_value(target, name)`` read the store's files (nothing cached answers
        it: no view, no parsed base, no overlay record of the field)?"""
        if self._view_with(target, name) is not None:
            return False
        if name in self.state.overlay.get(target):
            return False
        b = self._bases.get(target)
        return b is None or (name == TAGS and not b.tags_read)

    def put_base(self, target: str, base: BaseDoc) -> None:
        """Keep a base parsed from texts read elsewhere (``Operations._load_base``)."""
        _lru_put(self._bases, target, base, self.capacity)

    def field_bytes(self, target: str, name: str) -> bytes | None:
        """``_fields/<name>``'s contents (None: no such field), without building the view
        when there is none yet (a field write's lookups)."""
        v = self._view_with(target, name)
        if v is not None:
            return v.field_bytes(name)
        present, value = self.field_value(target, name)
        return field_text(name, value).encode("utf-8") if present else None

    def index_bytes(self, target: str) -> bytes | None:
        """``EntityView.index`` (the rendered ``_index.md``; None: the base file is served),
        without reading tags.lst when the front matter has no tags: tags.lst's tags are not
        in ``_index.md`` then. A first ``stat`` of an entity with overlay fields needs this
        size, and reading tags.lst too was a second cold read per entity."""
        v = self._cache.get(target)
        if v is None:
            base = self._base(target, tags=False)
            if base.tags_read or TAGS in base.front:
                return self.get(target).index
            overlay = self.state.overlay.get(target)
            v = self._keep(target, EntityView(base, merge(base, overlay, tags=False),
                                              bool(overlay), _newest_ns(overlay), complete=False))
        return v.index

    def mtime_ns(self, target: str) -> int:
        """The newest overlay record's time (0: none), as ``EntityView.mtime_ns``."""
        v = self._cache.get(target)
        if v is not None:
            return v.mtime_ns
        return _newest_ns(self.state.overlay.get(target))

    def drop(self, target: str, base: bool = True) -> None:
        """The entity changed: its overlay only (``base=False``) or maybe its store files."""
        self._cache.pop(target, None)
        if base:
            self._bases.pop(target, None)
        self.gen[target] = self.gen.get(target, 0) + 1

    def generation(self, target: str) -> int:
        return self.gen.get(target, 0)

    def _keep(self, target: str, v: EntityView) -> EntityView:
        """Cache a view (LRU, ``capacity``), replacing an incomplete one."""
        _lru_put(self._cache, target, v, self.capacity)
        return v

    def _view_with(self, target: str, name: str) -> EntityView | None:
        """The cached view, if it can answer for field ``name`` (an incomplete one lacks
        tags.lst's tags)."""
        v = self._cache.get(target)
        return v if v is not None and (v.complete or name != TAGS) else None

    def _base(self, target: str, tags: bool = True) -> BaseDoc:
        b = self._bases.get(target)
        if b is not None:
            self._bases.move_to_end(target)
            if tags and not b.tags_read:
                b.tags = self.state.base_tags(target)
                b.tags_read = True
            return b
        b = self.state.shown_base(target, tags)
        self.put_base(target, b)
        return b

    def _build(self, target: str) -> EntityView:
        overlay = self.state.overlay.get(target)
        base = self._base(target)
        return EntityView(base, merge(base, overlay), bool(overlay), _newest_ns(overlay))


def _lru_put(cache: OrderedDict[str, Any], key: str, value: Any, capacity: int) -> None:
    """Put ``key`` as the most recently used entry; drop the least recently used beyond
    ``capacity``."""
    cache[key] = value
    cache.move_to_end(key)
    if len(cache) > capacity:
        cache.popitem(last=False)


def _newest_ns(overlay: Mapping[str, Record]) -> int:
    """The newest record's wall time in ns (0: no records): the view files' mtime."""
    return max(physical_ms(r.hlc) for r in overlay.values()) * 1_000_000 if overlay else 0
