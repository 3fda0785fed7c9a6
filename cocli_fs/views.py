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

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from .document import TAGS, BaseDoc, DocumentError, field_text, merge, render_index, render_tags
from .hlc import physical_ms
from .state import NodeState

log = logging.getLogger(__name__)


@dataclass
class EntityView:
    base: BaseDoc
    fields: dict[str, Any]  # merged
    overlay: bool  # the overlay touches this entity (else base files are served verbatim)
    index: bytes | None  # rendered _index.md (None: none to show)
    tags: bytes | None  # rendered tags.lst when it is not a plain base file
    mtime_ns: int  # newest overlay record (0: none)
    _field_bytes: dict[str, bytes] = field(default_factory=dict)

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
        # Parsed bases of views dropped for an overlay change only (consumed by the next build).
        self._bases: OrderedDict[str, BaseDoc] = OrderedDict()
        self.gen: dict[str, int] = {}  # bumped on every change of a target (keep_cache checks)

    def has_overlay(self, target: str) -> bool:
        return bool(self.state.overlay.get(target))

    def get(self, target: str) -> EntityView:
        v = self._cache.get(target)
        if v is not None:
            self._cache.move_to_end(target)
            return v
        v = self._build(target)
        self._cache[target] = v
        if len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        return v

    def drop(self, target: str, base: bool = True) -> None:
        """The entity changed: its overlay only (``base=False``) or maybe its store files."""
        v = self._cache.pop(target, None)
        if base:
            self._bases.pop(target, None)
        elif v is not None:
            self._bases[target] = v.base
            self._bases.move_to_end(target)
            if len(self._bases) > self.capacity:
                self._bases.popitem(last=False)
        self.gen[target] = self.gen.get(target, 0) + 1

    def generation(self, target: str) -> int:
        return self.gen.get(target, 0)

    def _build(self, target: str) -> EntityView:
        overlay = self.state.overlay.get(target)
        base = self._bases.pop(target, None)
        if base is None:
            try:
                base = self.state.base(target)
            except DocumentError as exc:
                # A broken base must not hide the overlay: show the overlay alone and say why.
                log.error("%s/_index.md: %s", target, exc)
                base = BaseDoc()
        merged = merge(base, overlay)
        if not overlay:
            return EntityView(base, merged, False, None, None, 0)
        index = render_index(base, merged).encode("utf-8") if merged or base.front_text else None
        tags = None
        if TAGS in merged and TAGS not in base.front:
            tags = render_tags(merged[TAGS]).encode("utf-8")
        newest = max(physical_ms(r.hlc) for r in overlay.values()) * 1_000_000
        return EntityView(base, merged, True, index, tags, newest)
