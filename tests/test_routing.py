"""Write routing: the DESIGN §3 table, refused names, and the rule engine against its spec."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cocli_fs.routing import (
    DEFAULT_ROUTES,
    PathError,
    Route,
    Router,
    _match,
    check_name,
    target_of,
)

R = Router(["companies", "people"])


def route(path: str) -> Route:
    return R.route(R.split(path))


@pytest.mark.parametrize(
    ("path", "want"),
    [
        ("", Route.ROOT),
        ("companies", Route.KIND),
        ("people", Route.KIND),
        ("companies/acme", Route.ENTITY),
        ("companies/acme/_index.md", Route.INDEX),
        ("people/jane-doe/_index.md", Route.INDEX),
        ("companies/acme/tags.lst", Route.TAGS),
        ("companies/acme/_fields", Route.FIELDS_DIR),
        ("companies/acme/_fields/email", Route.FIELD),
        ("companies/acme/_fields/sub/x", Route.INVALID),
        ("companies/acme/notes/2026/call.md", Route.STORE),
        ("companies/acme/meetings/m1.md", Route.STORE),
        ("companies/acme/enrichments/site.json", Route.STORE),
        ("companies/acme/other.txt", Route.STORE),
        ("companies/acme/_fields.bak", Route.STORE),  # not _fields/: was INVALID before
        ("companies/acme/_fieldsx/a", Route.STORE),
        ("README.md", Route.STORE),
        ("campaigns/x/_index.md", Route.STORE),  # not an entity kind: a plain file
        ("wal", Route.READONLY),
        ("wal/20261125_pi-1.usv", Route.READONLY),
        ("wal/.x.swp", Route.READONLY),  # read-only wins over scratch
        (".cocli-fs", Route.PRIVATE),
        (".cocli-fs/dirty.log", Route.PRIVATE),
        # editor scratch, anywhere below the root
        ("companies/acme/._index.md.swp", Route.SCRATCH),
        ("companies/acme/.x.swp", Route.SCRATCH),
        ("companies/acme/.x.swo", Route.SCRATCH),
        ("companies/acme/.x.swpx", Route.SCRATCH),
        ("companies/acme/x~", Route.SCRATCH),
        ("companies/acme/_index.md~", Route.SCRATCH),
        ("companies/acme/4913", Route.SCRATCH),
        ("companies/acme/notes/4913", Route.SCRATCH),
        ("companies/4913", Route.ENTITY),  # a valid slug: an entity, not vim's write test
        ("companies/4913/_index.md", Route.INDEX),
        ("companies/acme/.#x", Route.SCRATCH),
        ("companies/acme/_fields/.email.swp", Route.SCRATCH),
        ("companies/acme/notes/.#draft.md", Route.SCRATCH),
        (".x.swp", Route.SCRATCH),
        ("companies/acme/x.swp", Route.STORE),  # not hidden: not vim's swap name
    ],
)
def test_design_table(path: str, want: Route) -> None:
    assert route(path) == want


@pytest.mark.parametrize(
    "path",
    [
        "companies/../wal/x",
        "companies/acme/../../etc/passwd",
        "..",
        "companies/./acme",
        "companies/-bad",
        "companies/.hidden",
        "companies/a b",
        "people/" + "x" * 300,
        "companies/acme/\x01ctl",
        "companies/acme/a\x00b",
    ],
)
def test_bad_paths_are_refused(path: str) -> None:
    with pytest.raises(PathError):
        R.split(path)


def test_split_and_target() -> None:
    parts = R.split("/companies//acme/notes/a.md")
    assert parts == ("companies", "acme", "notes", "a.md")
    assert target_of(parts) == "companies/acme"
    assert R.split("companies/acme.example+x@y_z-1") == ("companies", "acme.example+x@y_z-1")


def test_config_rules_come_first() -> None:
    r = Router(["companies"], [{"pattern": "companies/*/drafts/**", "route": "scratch"}])
    assert r.route(("companies", "acme", "drafts", "a.md")) == Route.SCRATCH
    assert r.route(("companies", "acme", "notes", "a.md")) == Route.STORE
    with pytest.raises(ValueError):
        Router(["companies"], [{"pattern": "x", "route": "no-such-route"}])


SEGMENTS = [
    "companies", "people", "wal", ".cocli-fs", "acme", "_index.md", "tags.lst", "_fields",
    "notes", "email", "4913", ".x.swp", ".x.swz", ".x.swpx", "x~", ".#x", "x.swp", "[x]", "a*b",
    "a?", ".", "~", "sw",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(SEGMENTS) | st.text("ab.#~[]*?!-_", min_size=1, max_size=5),
                min_size=1, max_size=6))
def test_compiled_router_agrees_with_the_rule_table(parts: list[str]) -> None:
    """The router may compile its rules however it likes; the answer must be the first rule
    of the table (config rules, then DEFAULT_ROUTES) that matches segment by segment."""
    extra = [{"pattern": "companies/*/drafts/**", "route": "scratch"}]
    router = Router(["companies", "people"], extra)
    kinds = frozenset(["companies", "people"])
    want = Route.STORE
    for pattern, r in [("companies/*/drafts/**", Route.SCRATCH),
                       *((x.pattern, x.route) for x in DEFAULT_ROUTES)]:
        if _match(pattern.split("/"), parts, kinds):
            want = r
            break
    assert router.route(tuple(parts)) == want


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(st.sampled_from([*SEGMENTS, "x"])
                         | st.text("ab.#~*-_", min_size=1, max_size=4), min_size=1, max_size=5),
                min_size=1, max_size=40),
       st.sampled_from([[], [{"pattern": "companies/*/drafts/**", "route": "scratch"}],
                        [{"pattern": "companies/a*/**", "route": "scratch"}],
                        [{"pattern": "**/notes/x", "route": "scratch"}],
                        [{"pattern": "{kind}/**/notes/x", "route": "scratch"}],
                        [{"pattern": "{kind}/**/x", "route": "scratch"}]]))
def test_one_router_keeps_agreeing_over_many_paths(paths: list[list[str]],
                                                  extra: list[dict[str, str]]) -> None:
    """Its caches (one per path, one per shape when no rule looks at slugs) never give an
    answer the rule table would not: many paths through the same router, with rules that do
    and do not look at slugs."""
    router = Router(["companies", "people"], extra)
    kinds = frozenset(["companies", "people"])
    table = [(x["pattern"], Route(x["route"])) for x in extra]
    table += [(x.pattern, x.route) for x in DEFAULT_ROUTES]
    for parts in paths * 2:
        want = next((r for p, r in table if _match(p.split("/"), parts, kinds)), Route.STORE)
        assert router.route(tuple(parts)) == want, parts


def test_shape_cache_only_when_no_rule_looks_at_slugs() -> None:
    assert Router(["companies"])._slug_blind
    assert Router(["companies"], [{"pattern": "companies/*/drafts/**", "route": "scratch"}]
                  )._slug_blind
    assert not Router(["companies"], [{"pattern": "companies/a*/**", "route": "scratch"}]
                      )._slug_blind
    assert not Router(["companies"], [{"pattern": "**/notes/x", "route": "scratch"}])._slug_blind
    assert not Router(["companies"], [{"pattern": "{kind}/**/notes/x", "route": "scratch"}]
                      )._slug_blind
    assert Router(["companies"], [{"pattern": "{kind}/**/x", "route": "scratch"}])._slug_blind


@pytest.mark.parametrize("extra", [
    [], [{"pattern": "companies/*/drafts/**", "route": "scratch"}],
    [{"pattern": "companies/a*/**", "route": "scratch"}],
    [{"pattern": "**/notes/x", "route": "scratch"}],
    [{"pattern": "{kind}/**/notes/x", "route": "scratch"}],
    [{"pattern": "{kind}/**/x", "route": "scratch"}],
])
def test_paths_that_differ_only_in_slug(extra: list[dict[str, str]]) -> None:
    """The shape cache's risk, tried head on: same tail, different slugs, one router."""
    router = Router(["companies", "people"], extra)
    kinds = frozenset(["companies", "people"])
    table = [(x["pattern"], Route(x["route"])) for x in extra]
    table += [(x.pattern, x.route) for x in DEFAULT_ROUTES]
    for tail in (["x"], ["notes", "x"], ["_index.md"], ["drafts", "a.md"], ["a", "notes", "x"]):
        for slug in ("acme", "notes", "ab", "4913", "b"):
            parts = ["companies", slug, *tail]
            want = next((r for p, r in table if _match(p.split("/"), parts, kinds)), Route.STORE)
            assert router.route(tuple(parts)) == want, (extra, parts)


_RULE_SEGMENTS = ["**", "*", "{kind}", "companies", "c*", "wal", "x", "a?", "[!w]*", "_fields"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.lists(st.sampled_from(_RULE_SEGMENTS), min_size=1, max_size=4),
                          st.sampled_from(["scratch", "readonly", "store", "invalid"])),
                min_size=1, max_size=4),
       st.lists(st.lists(st.sampled_from([*SEGMENTS, "x", "ab", "cx"]), min_size=1, max_size=5),
                min_size=1, max_size=30))
# Found by this test (session 12): "**" compiled to a bare ".*" could start inside a segment.
@example(rules=[(["**", "x", "**"], "scratch")], paths=[["x.swp"], ["a", "xy"], ["a", "x"]])
@example(rules=[(["x", "**", "wal"], "readonly")], paths=[["xabc", "wal"], ["x", "a", "wal"]])
def test_rules_of_any_shape_route_as_the_table_says(rules: list[tuple[list[str], str]],
                                                    paths: list[list[str]]) -> None:
    """Arbitrary config rules (globs in the first segment, ``**`` anywhere): the router's
    per-first-segment-and-depth cut of the rule table never drops a rule that matches."""
    extra = [{"pattern": "/".join(p), "route": r} for p, r in rules]
    router = Router(["companies", "people"], extra)
    kinds = frozenset(["companies", "people"])
    table = [(x["pattern"], Route(x["route"])) for x in extra]
    table += [(x.pattern, x.route) for x in DEFAULT_ROUTES]
    for parts in paths:
        want = next((r for p, r in table if _match(p.split("/"), parts, kinds)), Route.STORE)
        assert router.route(tuple(parts)) == want, (extra, parts)


@given(st.text(alphabet=st.characters(max_codepoint=0x3000), max_size=12))
@example(".")
@example("..")
@example("a\x7fb")  # DEL: allowed, but not "printable" (the slow path decides)
@example("a\tb")
@example("\u00a0x")  # a non-ASCII space: allowed
def test_check_name_refuses_exactly_separators_dot_names_and_control_characters(
    name: str,
) -> None:
    """``check_name`` clears most names with two tests in C before its regex; the names it
    refuses must be exactly those the rule names, whichever path decides."""
    bad = name in (".", "..") or "/" in name or any(c < " " for c in name)
    try:
        check_name(name)
    except PathError:
        assert bad
    else:
        assert not bad
