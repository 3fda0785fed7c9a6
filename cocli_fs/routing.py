"""Write routing: which path on the mount goes where. The rules are data (DEFAULT_ROUTES, plus
``[mount] routes`` from the config tried first); the FUSE layer asks ``Router.route(path)``.

Patterns are matched against the path relative to the mount root, segment by segment:
``*`` matches one segment (with shell-style wildcards inside it), ``**`` any number of segments,
and ``{kind}`` any configured entity kind (``companies``, ``people``).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from enum import StrEnum


class Route(StrEnum):
    ROOT = "root"  # the mount root
    KIND = "kind"  # companies/, people/
    ENTITY = "entity"  # companies/<slug>/ : mkdir goes straight to the store
    INDEX = "index"  # _index.md: creates the entity, or a diff into journal records
    TAGS = "tags"  # tags.lst: one record for field `tags`
    FIELDS_DIR = "fields_dir"  # _fields/
    FIELD = "field"  # _fields/<name>: one record (unlink: tombstone)
    STORE = "store"  # notes/, meetings/, enrichments/, anything else: the backing store
    SCRATCH = "scratch"  # editor swap/backup files: node-local, never synced or gossiped
    READONLY = "readonly"  # wal/: EROFS on any write
    PRIVATE = "private"  # our own state folder: EACCES
    INVALID = "invalid"  # a name that may not exist here: EINVAL


@dataclass(frozen=True)
class Rule:
    pattern: str
    route: Route


DEFAULT_ROUTES: tuple[Rule, ...] = (
    Rule(".cocli-fs", Route.PRIVATE),
    Rule(".cocli-fs/**", Route.PRIVATE),
    Rule("wal", Route.READONLY),
    Rule("wal/**", Route.READONLY),
    # Editor scratch: vim swap/backup and its write test file, emacs lock files, backups.
    Rule("**/.*.sw[a-p]", Route.SCRATCH),
    Rule("**/.*.sw[a-p]x", Route.SCRATCH),
    Rule("**/*~", Route.SCRATCH),
    # vim's write test, in the folder of the file it saves: "4913" is also a valid slug, so
    # not at entity level (an entity named 4913 must be an entity).
    Rule("{kind}/*/**/4913", Route.SCRATCH),
    Rule("**/.#*", Route.SCRATCH),
    Rule("{kind}", Route.KIND),
    Rule("{kind}/*", Route.ENTITY),
    Rule("{kind}/*/_index.md", Route.INDEX),
    Rule("{kind}/*/tags.lst", Route.TAGS),
    Rule("{kind}/*/_fields", Route.FIELDS_DIR),
    Rule("{kind}/*/_fields/*", Route.FIELD),
    Rule("{kind}/*/_fields/**", Route.INVALID),  # no sub-folders under _fields/
    Rule("**", Route.STORE),
)

SLUG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+@-]{0,254}$")
FIELD_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


class PathError(ValueError):
    """A path that may never exist on the mount (``..``, bad slug, control bytes)."""


def _match(pattern: list[str], parts: list[str], kinds: frozenset[str]) -> bool:
    if not pattern:
        return not parts
    head = pattern[0]
    if head == "**":
        return any(_match(pattern[1:], parts[i:], kinds) for i in range(len(parts) + 1))
    if not parts:
        return False
    ok = parts[0] in kinds if head == "{kind}" else fnmatch.fnmatchcase(parts[0], head)
    return ok and _match(pattern[1:], parts[1:], kinds)


def _slug_blind(pattern: list[str], kinds: frozenset[str]) -> bool:
    """Can this pattern tell two paths ``kind/<slug>/<rest>`` (rest non-empty) apart only by
    their slugs? Blind: it cannot match such paths at all (a first segment that is no kind),
    its second segment is ``*`` (or ``**`` with at most one segment after it), it is ``**``
    alone, or it is ``**/<one segment>`` (it looks at the last segment only, which is never
    the slug here)."""
    if not pattern:
        return True
    head = pattern[0]
    if head == "**":  # alone it matches everything alike; "**/x" looks at the tail only
        return len(pattern) == 1 or (len(pattern) == 2 and pattern[1] != "**")
    if head != "{kind}" and not any(fnmatch.fnmatchcase(k, head) for k in kinds):
        return True
    if len(pattern) < 2 or pattern[1] == "*":
        return True
    # "kind/**/x" looks at the tail only; "kind/**/a/b" can align "a" with the slug.
    return pattern[1] == "**" and len(pattern) <= 3


_NEVER = re.compile(r"(?!)")


def _may_match(pattern: list[str], head: str, n: int, kinds: frozenset[str]) -> bool:
    """Can this pattern match some path of ``n`` segments whose first segment is ``head``?"""
    fixed = sum(1 for seg in pattern if seg != "**")
    if n < fixed or (n > fixed and "**" not in pattern):
        return False
    first = pattern[0] if pattern else None
    if first is None or first == "**":
        return True
    if first == "{kind}":
        return head in kinds
    return fnmatch.fnmatchcase(head, first)


def _segment_regex(seg: str, kinds: frozenset[str]) -> str:
    """One pattern segment -> a regex for ``/<segment>`` (shell-style wildcards, no '/')."""
    if seg == "**":
        # Zero or more whole segments: nothing, or a "/" and then anything. It starts at a
        # segment's start, and it ends at one, since every other segment's regex starts with
        # "/" (or the path ends). Unlike "(?:/[^/]*)*" it costs the engine no backtracking per
        # segment (the match of a new entity path 5.9 -> 1.1 µs; Router.route 5.3 -> 3.7 µs).
        # A bare ".*" (until session 12) could start inside a segment: "**/x/**" matched
        # "x.swp", and "x/**/y" matched "xabc/y".
        return "(?:/.*)?"
    if seg == "{kind}":
        return "/(?:" + "|".join(re.escape(k) for k in sorted(kinds)) + ")"
    out, i = ["/"], 0
    while i < len(seg):
        c = seg[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[" and "]" in seg[i + 2 :]:
            j = seg.index("]", i + 2)
            body = seg[i + 1 : j]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = j
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


class Router:
    def __init__(self, kinds: list[str], extra: list[dict[str, str]] | None = None) -> None:
        self.kinds = frozenset(kinds)
        rules = [Rule(r["pattern"], Route(r["route"])) for r in (extra or [])]
        self.rules = [(r.pattern.split("/"), r.route) for r in (*rules, *DEFAULT_ROUTES)]
        self._cache: dict[tuple[str, ...], Route] = {}
        # Rules as one ordered alternation: the first alternative that matches is the first
        # rule that matches, so a lookup costs one regex match instead of a rule walk (the
        # mount classifies every entry of a 300,000-entry listing). Compiled per first segment
        # and segment count, from the rules that can match such a path: ``companies/<slug>``
        # is tried against 6 rules, not all 17 (a third of the cost of an entity's first visit).
        self._alts = [
            f"(?P<r{i}>{''.join(_segment_regex(s, self.kinds) for s in pat)})$"
            for i, (pat, _r) in enumerate(self.rules)
        ]
        self._by_head: dict[tuple[str, int], re.Pattern[str]] = {}
        # When no rule looks at the slug of a path inside an entity, every
        # ``companies/<any slug>/<rest>`` routes alike: one cache entry per shape (a handful)
        # instead of a regex match per entity (~18 µs each in a busy mount, for every first
        # ``stat`` of an ``_index.md``).
        self._slug_blind = all(_slug_blind(pat, self.kinds) for pat, _r in self.rules)
        self._shapes: dict[tuple[str, ...], Route] = {}

    def route(self, parts: tuple[str, ...]) -> Route:
        """Route for a path given as its segments (``("companies", "acme", "_index.md")``)."""
        if not parts:
            return Route.ROOT
        hit = self._cache.get(parts)
        if hit is not None:
            return hit
        shape = None
        if self._slug_blind and len(parts) >= 3 and parts[0] in self.kinds:
            shape = (parts[0], *parts[2:])
            hit = self._shapes.get(shape)
            if hit is not None:
                return hit
        rx = self._by_head.get((parts[0], len(parts)))
        if rx is None:
            rx = self._regex_for(parts[0], len(parts))
        m = rx.match("/" + "/".join(parts))
        route = self.rules[int(m.lastgroup[1:])][1] if m and m.lastgroup else Route.STORE
        if shape is not None:
            if len(self._shapes) > 10_000:
                self._shapes.clear()
            self._shapes[shape] = route
            return route
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[parts] = route
        return route

    def same_in_every_entity(self, name: str) -> Route | None:
        """The route of ``<kind>/<slug>/name`` when it is the same for every kind and every slug
        (no rule looks at slugs), else None."""
        if not self._slug_blind or not self.kinds:
            return None
        routes = {self.route((k, "a", name)) for k in self.kinds}
        return routes.pop() if len(routes) == 1 else None

    def _regex_for(self, head: str, n: int) -> re.Pattern[str]:
        alts = [
            alt for (pat, _r), alt in zip(self.rules, self._alts, strict=True)
            if _may_match(pat, head, n, self.kinds)
        ]
        rx = re.compile("^(?:" + "|".join(alts) + ")", re.DOTALL) if alts else _NEVER
        if len(self._by_head) > 1000:  # top-level names are few; bound it anyway
            self._by_head.clear()
        self._by_head[(head, n)] = rx
        return rx

    def split(self, path: str) -> tuple[str, ...]:
        """``"companies/acme/notes/a.md"`` -> segments, refusing anything that could escape."""
        parts = tuple(p for p in path.split("/") if p)
        for p in parts:
            check_name(p)
        if len(parts) >= 2 and parts[0] in self.kinds and not SLUG_RE.match(parts[1]):
            raise PathError(f"{parts[1]!r} is not a valid slug")
        return parts


_CONTROL = re.compile("[\x00-\x1f]")


def check_name(name: str) -> None:
    if name in (".", "..") or "/" in name or "\x00" in name:
        raise PathError(f"invalid name {name!r}")
    # Most names are printable ASCII: two tests in C clear them of control characters, and
    # the regex runs only for the rest (a lookup's first step, costly on cold CPU caches).
    if not (name.isascii() and name.isprintable()) and _CONTROL.search(name):
        raise PathError(f"control character in name {name!r}")


def target_of(parts: tuple[str, ...]) -> str:
    """``("companies", "acme", ...)`` -> ``"companies/acme"`` (the journal's target)."""
    return f"{parts[0]}/{parts[1]}"
