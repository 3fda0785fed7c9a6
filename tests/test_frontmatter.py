"""The fast front-matter reader: for any text, it gives PyYAML's answer or steps aside (None)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from cocli_fs import document as doc
from cocli_fs import frontmatter, sample

RESOLVERS = doc._Loader.yaml_implicit_resolvers


def pyyaml(text: str) -> Any:
    try:
        return doc.yaml_load(text)
    except yaml.YAMLError:
        return "<error>"


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (1 == 1.0 == True must not pass)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


def check(text: str) -> bool:
    """True when the fast reader answered (it must then agree with PyYAML)."""
    fast = frontmatter.load(text, RESOLVERS)
    if fast is None:
        return False
    slow = pyyaml(text)
    assert same(fast, slow), f"{text!r}: fast {fast!r} != PyYAML {slow!r}"
    return True


# Words that PyYAML types specially, and characters that change how a line parses.
TRICKY = ["yes", "No", "on", "OFF", "true", "null", "~", "12", "012", "0x1f", "1_000", "-3",
          "+4", "4.6", "1.", ".5", "+.5", "1e5", "1.5e+3", ".inf", ".NaN", "<<", "=",
          "2026-11-25", "12:30", "1:20:30", "y", "n", "-", "--", "---", "...", "#c", "a #b",
          "a#b", "a: b", "a:", ":a", "[x]", "{y}", "&a", "*a", "!t", "|", ">", "%", "@", "`",
          "'q'", "'it''s'", "'bad'x'", '"dq"', '"esc\\n"', "é", "\u00a0", "x\x07", "  pad  "]
PLAIN = ["Acme", "Main Street,", "x.y@z.org", "https://a.b/c?d=e", "gold", "-", "4", "v2"]
word = st.one_of(st.sampled_from(TRICKY), st.sampled_from(PLAIN), st.sampled_from(PLAIN),
                 st.text(max_size=8))
key = st.one_of(st.sampled_from(["name", "tier", "on", "yes", "null", "12", "a-b", "_x",
                                 "dup", "k", "email", "city", "rating"]), st.text(max_size=5))
fresh_key = st.sampled_from(["name", "tier", "email", "city", "rating", "a-b", "_x", "k", "on"])
scalar_text = st.lists(word, min_size=0, max_size=3).map(" ".join)


@st.composite
def handwritten(draw: st.DrawFn) -> str:
    """Lines a person (or a script) might write: keys, scalars, lists, comments, indents."""
    lines = []
    for _ in range(draw(st.integers(1, 6))):
        shape = draw(st.integers(0, 5))
        k = draw(st.one_of(fresh_key, key))
        if shape <= 2:
            lines.append(f"{k}: {draw(scalar_text)}")
        elif shape == 3:
            lines.append(f"{k}:")
            indent = draw(st.sampled_from(["", "  ", " "]))
            for _ in range(draw(st.integers(0, 3))):
                lines.append(f"{draw(st.sampled_from([indent, '  ', '']))}- {draw(scalar_text)}")
        elif shape == 4:
            lines.append(draw(st.sampled_from(["# comment", "", "  ", "  nested: 1", "\tx: 1"])))
        else:
            lines.append(draw(scalar_text))
    return "\n".join(lines) + draw(st.sampled_from(["\n", "", "\n\n"]))


values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
              st.floats(allow_nan=False, width=32), scalar_text, st.text(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=8,
)


@settings(max_examples=600, deadline=None)
@given(handwritten())
def test_handwritten_text_agrees_with_pyyaml(text: str) -> None:
    check(text)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.one_of(key, st.text(min_size=1, max_size=8)), values, max_size=8))
def test_dumped_documents_agree_with_pyyaml(data: dict[str, Any]) -> None:
    check(doc.yaml_dump(data))


def test_cocli_shaped_files_take_the_fast_path() -> None:
    """The reader exists for these: every generated company file must be read fast."""
    for c in sample.companies(200, seed=3):
        front, _ = doc.split_front_matter(c.index_md())
        assert front is not None
        assert check(front), front


def test_examples() -> None:
    assert frontmatter.load("a: 1\nb: 'x'\nc:\n- yes\n- '012'\nd:\n", RESOLVERS) == {
        "a": 1, "b": "x", "c": [True, "012"], "d": None}
    for text in ["a: 012\n", "a: 1_000\n", "a: &x 1\nb: *x\n", "a: b: c\n", "a:\n  b: 1\n",
                 "a: 1\na: 2\n", "yes: 1\n", 'a: "x\\ty"\n', "a: |\n  x\n", "# only\n"]:
        assert frontmatter.load(text, RESOLVERS) is None, text


def test_real_index_files_parse_the_same(tmp_path: Path) -> None:
    """parse_index (fast path) and PyYAML agree on a whole generated tree."""
    for c in sample.companies(50, seed=9):
        text = c.index_md()
        front, _ = doc.split_front_matter(text)
        assert front is not None
        assert doc.parse_index(text).front == doc.yaml_load(front)


@settings(max_examples=1500, deadline=None)
@given(scalar_text, st.sampled_from(["k: {}\n", "k: {} \n", "k:\n- {}\n", "k:\n  - {}\n- x\n"]))
def test_one_scalar_agrees_with_pyyaml(s: str, shape: str) -> None:
    check(shape.format(s))


flat = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                 st.floats(allow_nan=False, width=32), scalar_text)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(fresh_key, st.one_of(flat, st.lists(flat, max_size=4)), max_size=6))
def test_dumped_flat_documents_agree_with_pyyaml(data: dict[str, Any]) -> None:
    check(doc.yaml_dump(data))
