"""The merged view of one entity as the mount shows it, rendered once and cached per target.

Rendering parses the base ``_index.md`` (YAML) and applies the overlay; that costs far more than
a FUSE round trip, so the result (bytes and exact sizes of ``_index.md``, ``tags.lst`` and every
``_fields/<f>``) is kept until the entity changes (``drop``, called from the state listeners).
An entity without overlay entries is served from its base files verbatim and needs no view
except for its ``_fields/`` folder.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from .document import TAGS, BaseDoc, field_text, render_index, render_tags
from .hlc import physical_ms
from .state import NodeState


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

    def drop(self, target: str) -> None:
        self._cache.pop(target, None)
        self.gen[target] = self.gen.get(target, 0) + 1

    def generation(self, target: str) -> int:
        return self.gen.get(target, 0)

    def _build(self, target: str) -> EntityView:
        overlay = self.state.overlay.get(target)
        base, merged = self.state.merged(target)
        if not overlay:
            return EntityView(base, merged, False, None, None, 0)
        index = render_index(base, merged).encode("utf-8") if merged or base.front_text else None
        tags = None
        if TAGS in merged and TAGS not in base.front:
            tags = render_tags(merged[TAGS]).encode("utf-8")
        newest = max(physical_ms(r.hlc) for r in overlay.values()) * 1_000_000
        return EntityView(base, merged, True, index, tags, newest)
