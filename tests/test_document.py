"""Entity documents: render -> parse -> diff is empty, merges render faithfully, field files."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cocli_fs import document as doc
from cocli_fs import record as rec
from cocli_fs.document import TOMBSTONE, BaseDoc, DocumentError
from cocli_fs.record import Record

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
HLC = 1_764_000_000_000 << rec.HLC_LOGICAL_BITS

# Text a cocli document may hold: any printable Unicode (YAML cannot carry most control
# characters, and a record cannot carry the separators).
text = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cs", "Cc", "Co", "Cn"), blacklist_characters="\x1e\x1f\ufeff"
    ),
    max_size=20,
)
dates = st.dates().map(lambda d: d.isoformat()) | st.datetimes().map(lambda d: d.isoformat())
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | text
    | dates
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)
keys = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Co", "Cn", "Zs", "Zl", "Zp"),
                           blacklist_characters="\x1e\x1f\ufeff"),
    min_size=1,
    max_size=12,
).filter(lambda k: k not in (doc.DESCRIPTION,))
fronts = st.dictionaries(keys, values, max_size=6)
bodies = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Co", "Cn"),
                           blacklist_characters="\x1e\x1f\ufeff\r\x85\u2028\u2029"),
    max_size=60,
)


def write_index(front: dict[str, Any], body: str) -> str:
    """A document as a person or cocli would write it."""
    return "---\n" + (doc.yaml_dump(front) if front else "") + "---\n" + body


def base_of(front: dict[str, Any], body: str) -> BaseDoc:
    b = doc.parse_index(write_index(front, body))
    assert b.front == front
    return b


@SETTINGS
@given(front=fronts, body=bodies)
def test_render_parse_diff_is_empty(front: dict[str, Any], body: str) -> None:
    base = base_of(front, body)
    merged = doc.merge(base, {})
    text_out = doc.render_index(base, merged)
    assert text_out == write_index(front, body)  # no overlay: the base's bytes
    assert doc.diff_index(merged, text_out, tags_in_front=doc.TAGS in front) == {}


@st.composite
def overlays(draw: st.DrawFn, front: dict[str, Any]) -> dict[str, Record]:
    names = draw(st.lists(st.sampled_from([*front, "new_a", "new_b", doc.DESCRIPTION]) if front
                          else st.sampled_from(["new_a", "new_b", doc.DESCRIPTION]),
                          max_size=5, unique=True))
    out = {}
    for i, name in enumerate(names):
        if draw(st.integers(0, 3)) == 0:
            r = rec.make(hlc=HLC + i, node_id="n", seq=i + 1, target="companies/x", field=name,
                         tombstone=True)
        else:
            v = draw(bodies.map(lambda s: s.strip("\n")) if name == doc.DESCRIPTION else values)
            r = rec.make(hlc=HLC + i, node_id="n", seq=i + 1, target="companies/x", field=name,
                         value=v)
        out[name] = r
    return out


@SETTINGS
@given(front=fronts, body=bodies, data=st.data())
def test_merged_document_renders_and_diffs_to_nothing(
    front: dict[str, Any], body: str, data: st.DataObject
) -> None:
    base = base_of(front, body)
    overlay = data.draw(overlays(front))
    merged = doc.merge(base, overlay)
    rendered = doc.render_index(base, merged)
    assert doc.diff_index(merged, rendered, tags_in_front=doc.TAGS in front) == {}
    # What a reader sees is the merged state: parse it back field by field.
    back = doc.index_fields(doc.parse_index(rendered))
    if not back.get(doc.DESCRIPTION):
        back.pop(doc.DESCRIPTION)
    expect = {k: v for k, v in merged.items() if k != doc.TAGS or doc.TAGS in front}
    if not expect.get(doc.DESCRIPTION):
        expect.pop(doc.DESCRIPTION, None)
    assert doc.diff(expect, back) == {} and doc.diff(back, expect) == {}
    # Keys untouched by the overlay keep their order ahead of added ones.
    kept = [k for k in front if k not in overlay]
    assert [k for k in doc.parse_index(rendered).front if k in kept] == kept


def test_untouched_keys_keep_their_text_comments_and_order() -> None:
    original = (
        "---\n"
        "name: Acme   # the legal name\n"
        "domain: 'acme.example'\n"
        "founded: 2001-02-03\n"
        "emails:\n"
        "  - a@acme.example   # primary\n"
        "  - b@acme.example\n"
        "---\n"
        "\n"
        "Acme makes anvils.\n"
    )
    base = doc.parse_index(original)
    assert base.front["founded"] == "2001-02-03"  # dates stay text
    overlay = {
        "domain": rec.make(hlc=HLC, node_id="n", seq=1, target="companies/acme", field="domain",
                           value="acme.test"),
        "employees": rec.make(hlc=HLC, node_id="n", seq=2, target="companies/acme",
                              field="employees", value=12),
    }
    out = doc.render_index(base, doc.merge(base, overlay))
    assert out == (
        "---\n"
        "name: Acme   # the legal name\n"
        "domain: acme.test\n"
        "founded: 2001-02-03\n"
        "emails:\n"
        "  - a@acme.example   # primary\n"
        "  - b@acme.example\n"
        "employees: 12\n"
        "---\n"
        "\n"
        "Acme makes anvils.\n"
    )


def test_diff_of_an_edit_gives_sets_and_tombstones() -> None:
    base = doc.parse_index("---\nname: Acme\nphone: '123'\ncity: Oslo\n---\nBody\n")
    merged = doc.merge(base, {})
    edited = "---\nname: Acme Corp\ncity: Oslo\nrevenue: 5\n---\nNew body\n"
    assert doc.diff_index(merged, edited, tags_in_front=False) == {
        "name": "Acme Corp",
        "revenue": 5,
        "description": "New body",
        "phone": TOMBSTONE,
    }
    # An emptied body removes the description; tags in tags.lst are not the document's.
    with_tags = doc.load_base("---\nname: A\n---\nx\n", "t1\nt2\n")
    m = doc.merge(with_tags, {})
    assert m["tags"] == ["t1", "t2"]
    assert doc.diff_index(m, "---\nname: A\n---\n", tags_in_front=False) == {
        "description": TOMBSTONE
    }


@pytest.mark.parametrize(
    "bad",
    [
        "---\nname: [unclosed\n---\n",
        "---\n- a list\n---\n",
        "---\ndescription: not here\n---\n",
        "---\nname: x\n",  # never closed
        "---\n1: numeric key\n---\n",
    ],
)
def test_bad_documents_are_refused_with_a_clear_error(bad: str) -> None:
    with pytest.raises(DocumentError):
        doc.parse_index(bad)


@SETTINGS
@given(
    name=st.sampled_from(["website", "notes_count", "flags", doc.TAGS]),
    value=values | bodies,
)
def test_field_text_round_trips(name: str, value: Any) -> None:
    if name == doc.TAGS:
        value = [v for v in (value if isinstance(value, list) else [value]) if isinstance(v, str)]
    assume(value is not None)
    if isinstance(value, str):
        # A string that reads as JSON is ambiguous in a field file: it means the structure.
        assume(value.strip()[:1] not in ("[", "{"))
    shown = doc.field_text(name, value)
    assert shown.endswith("\n")
    back = doc.parse_field_text(name, shown, current=value)
    assert doc.same_value(back, value), (shown, back)


@pytest.mark.parametrize("text, tags, description", [
    ("---\nname: Acme\n---\n", ["b2b"], None),  # no body: no description field
    ("---\nname: Acme\n---\n\n\n", None, None),  # blank lines only: none either
    ("---\nname: Acme\n---\n\nBakes bread.\n\n", None, "Bakes bread."),
    ("Just a body\n", [], "Just a body"),
])
def test_one_field_of_a_base_is_what_all_fields_say(
        text: str, tags: list[str] | None, description: str | None) -> None:
    base = doc.parse_index(text)
    base.tags = tags
    every = base.fields()
    assert every.get(doc.DESCRIPTION) == description
    assert (doc.DESCRIPTION in every) == (description is not None)
    for name in [*every, doc.DESCRIPTION, doc.TAGS, "missing"]:
        assert base.field(name) == (name in every, every.get(name)), name


def test_field_text_description_and_tags_lines() -> None:
    assert doc.parse_field_text(doc.DESCRIPTION, "\nBody text\n\n") == "Body text"
    assert doc.parse_field_text(doc.TAGS, "a\n b \n\nc\n") == ["a", "b", "c"]
    assert doc.parse_field_text("employees", "12\n", current=10) == 12
    assert doc.parse_field_text("zip", "0123\n", current="9999") == "0123"  # a string stays one
    with pytest.raises(rec.RecordError):
        doc.parse_field_text("f", "bad\x1fvalue")
    with pytest.raises(DocumentError):
        doc.parse_field_text(doc.TAGS, "[not json\n")
