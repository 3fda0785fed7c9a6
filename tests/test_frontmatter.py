"""The fast front-matter reader: for any text, it gives PyYAML's answer or steps aside (None)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pytest
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
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)  # in order, too
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


TABLE = frontmatter._table(RESOLVERS)


def check(text: str) -> bool:
    """True when the fast reader answered (it must then agree with PyYAML).

    Each of its two readers is held to that on its own too, so that a bug in _load_dumped is
    not hidden by _load_any answering the same text, or the other way round."""
    fast = frontmatter.load(text, RESOLVERS)
    slow = pyyaml(text)
    if fast is not None:
        assert same(fast, slow), f"{text!r}: fast {fast!r} != PyYAML {slow!r}"
    if text.isascii() or text.replace("\n", "").isprintable():  # what load checks first
        for reader in (frontmatter._load_dumped, frontmatter._load_dumped_py,
                       frontmatter._load_any):
            got = reader(text, TABLE)
            if got and all(  # the key checks load makes after either reader
                frontmatter._tag(k, TABLE.by_first) is None and len(k) <= 1024 for k in got
            ):
                assert same(got, slow), f"{text!r}: {reader.__name__} {got!r} != PyYAML {slow!r}"
    return fast is not None


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


@st.composite
def dumped_shape(draw: st.DrawFn) -> str:
    """``key: value``, ``key:`` and column-0 items, as yaml_dump lays them out, but with any
    value unquoted: text the bulk checks of _load_dumped must sort right."""
    lines = []
    for _ in range(draw(st.integers(1, 5))):
        k = draw(st.one_of(fresh_key, key))
        if draw(st.booleans()):
            lines.append(f"{k}:{draw(st.sampled_from([' ', '  ']))}{draw(scalar_text)}")
        else:
            lines.append(f"{k}:")
            lines.extend(f"- {draw(scalar_text)}" for _ in range(draw(st.integers(0, 3))))
    return "\n".join(lines) + draw(st.sampled_from(["\n", "\n", ""]))


@settings(max_examples=1000, deadline=None)
@given(dumped_shape())
def test_dumped_shape_agrees_with_pyyaml(text: str) -> None:
    check(text)


# Texts aimed at each fast path: (text, what load must give; None: must step aside; ANY: either).
ANY = object()
EDGES: list[tuple[str, Any]] = [
    # ": ", " #" and ":" at the end: inside a plain value they end it or make a mapping.
    ("a: b: c\n", None), ("a:\n- b: c\n", None), ("a: x:\n", None), ("a:\n- x:\n", None),
    ("a: x #y\n", None), ("a:\n- x #y\n", None), ("a: #x\n", None),
    ("a: x:y\n", {"a": "x:y"}), ("a: x :y\n", {"a": "x :y"}), ("a: x#y\n", {"a": "x#y"}),
    ("a: x::y\n", {"a": "x::y"}), ("a: x : y\n", None),
    # Quotes: inside them ": " and " #" are text (_load_any reads what _load_dumped refuses).
    ("a: 'b: c'\n", {"a": "b: c"}), ("a: 'x #y'\n", {"a": "x #y"}), ('a: "b: c"\n', {"a": "b: c"}),
    ("a:\n- 'b: c'\n- '#'\n", {"a": ["b: c", "#"]}), ("a: 'it''s'\n", {"a": "it's"}),
    ("a: ''\n", {"a": ""}), ('a: ""\n', {"a": ""}), ("a: 'x' y\n", None), ("a: 'x\n", None),
    ('a: "x\\"y"\n', None), ('a: "x\\ty"\n', None), ("a: 'x' #c\n", None),
    # A leading indicator, or a character a resolver claims.
    *((f"a: {c}x\n", None) for c in "-?:,[]{}#&*!|>%@`"),
    ("a: - x\n", None), ("a:\n- - x\n", None), ("a: [x]\n", None), ("a: {x: 1}\n", None),
    ("a: x-[y]{z},&*!|>%@`'\"\n", {"a": "x-[y]{z},&*!|>%@`'\""}),
    ("a: null\nb: ~\nc: true\nd: No\ne: 4.6\ng: +4\nh: .5\ni: 1.\n",
     {"a": None, "b": None, "c": True, "d": False, "e": 4.6, "g": 4, "h": 0.5, "i": 1.0}),
    ("a: -3\n", None), ("a: 012\n", None), ("a: 0x1f\n", None), ("a: 1_0\n", None),
    ("a: .inf\n", None), ("a: <<\n", None), ("a: =\n", None), ("a: 1e5\n", {"a": "1e5"}),
    ("a: 1.5e+3\n", {"a": 1500.0}),
    ("a: 2026-11-25\n", {"a": "2026-11-25"}), ("a: 1:20\n", ANY), ("a: 1M-5M\n", {"a": "1M-5M"}),
    ("a:\n- 12\n- null\n- yes\n- '12'\n", {"a": [12, None, True, "12"]}),
    # Padding, and whitespace that is not " ".
    ("a: x  \n", {"a": "x"}), ("a:   x\n", {"a": "x"}), ("a:   \n", {"a": None}),
    ("a:\n-   x  \n", {"a": ["x"]}), ("a:\n- \n", None), ("a:\n-\n", None), ("a:x\n", None),
    ("a: x\u00a0\n", None), ("a: \u3000x\n", None), ("a: x\u2028y\n", None), ("a: x\x85y\n", None),
    ("a: x\ty\n", None), ("a:\tx\n", None), ("\ta: x\n", None), ("a: x\x0by\n", None),
    ("a: x\x0cy\n", None), ("a: x\x7f\n", None), ("a: x\x00\n", None), ("a:\n- x\x1b\n", None),
    ("a: 1\n\x0c\n", None), ("a: é\n", {"a": "é"}), ("a:\n- ünï\n", {"a": ["ünï"]}),
    # A line break PyYAML sees inside a comment (the old reader skipped the line it started).
    ("a: 1\n# c\x85b: 2\n", None), ("a: 1\n# c\u2028b: 2\n", None), ("# c\x01\na: 1\n", None),
    ("a: 1\n  # c\x1b\n", None),
    # CRLF and CR.
    ("a: x\r\nb: y\r\n", None), ("a:\r\n- x\r\n", None), ("a: x\rb: y\n", None),
    # Document markers, in values and as lines.
    ("a: ---\n", None), ("a: x --- y\n", {"a": "x --- y"}), ("a:\n- ---\n", None),
    ("a: ...\n", {"a": "..."}), ("---\na: 1\n", None), ("a: 1\n---\nb: 2\n", None),
    ("a: 1\n...\n", None), ("a: 1\n--- \n", None), ("%YAML 1.1\na: 1\n", None),
    # Comments and blank lines (PyYAML skips them at any indent, inside a list too).
    ("a: 1\n# c\nb: 2\n", {"a": 1, "b": 2}), ("a:\n- x\n# c\n- y\n", {"a": ["x", "y"]}),
    ("a:\n  - x\n  # c\n\n  - y\n", {"a": ["x", "y"]}), ("a: 1\n  # c\n", {"a": 1}),
    ("a:\n# c\n- x\n", {"a": ["x"]}), ("\n\na: 1\n\n", {"a": 1}), ("a: 1\n   \n", {"a": 1}),
    ("# only\n", None), ("", None), ("\n", None),
    # Lists: one indent per list, only under ``key:``.
    ("a:\n  - x\n- y\n", None), ("a:\n- x\n  - y\n", None),
    ("a:\n- x\nb: y\n", {"a": ["x"], "b": "y"}),
    ("- x\n", None), ("a: 1\n- x\n", None), ("a:\n-x\n", None), ("a:\n- x\n  y\n", None),
    ("a: x\n  y\n", None), ("a: x\ny\n", None), ("a:\n b: 1\n", None),
    # No newline at the end.
    ("a: 1", {"a": 1}), ("a:\n- x", {"a": ["x"]}), ("a:", {"a": None}), ("a: x ", {"a": "x"}),
    # Keys.
    ("a b: 1\n", None), ("a-b: 1\n_: 2\n", {"a-b": 1, "_": 2}), ("on: 1\n", None),
    ("Null: x\n", None), ("a: 1\na: 2\n", None), ("a:\na: 1\n", None), ("a:\n- x\na:\n- y\n", None),
    ("'a': 1\n", None), ("a : 1\n", None), (" a: 1\n", None),
]


@pytest.mark.parametrize(("text", "expected"), EDGES)
def test_edges(text: str, expected: Any) -> None:
    check(text)
    if expected is not ANY:
        got = frontmatter.load(text, RESOLVERS)
        assert same(got, expected), f"{text!r}: {got!r}"


def test_yaml_dump_output_takes_the_bulk_path() -> None:
    """_load_dumped exists for what yaml_dump writes: it must not hand those to _load_any."""
    for c in sample.companies(100, seed=5):
        front, _ = doc.split_front_matter(c.index_md())
        assert front is not None
        assert frontmatter._load_dumped(front, TABLE) is not None, front
    data = {"a": "x", "b": ["y", "12", "#z", 7], "c": None, "e": 4.5, "f": "#x", "g": "", "h": True}
    text = doc.yaml_dump(data)
    assert frontmatter._load_dumped(text, TABLE) == data, text


# --- the optional C reader (cocli_fs/_fastfront.c) agrees with the Python one --------------------


def _c() -> Any:
    """The optional C extension module, or None (untyped: it is built from C)."""
    return getattr(frontmatter, "_fastfront", None)


def test_the_c_reader_is_in_use_when_built() -> None:
    """scripts/bootstrap builds the extension; a silent fall-back to the slower reader would go
    unnoticed otherwise."""
    from importlib.machinery import EXTENSION_SUFFIXES

    pkg = Path(frontmatter.__file__).parent
    built = any((pkg / f"_fastfront{suffix}").exists() for suffix in EXTENSION_SUFFIXES)
    if not built and not os.environ.get("CI"):
        pytest.skip("the C extension is not built here (pip install -e . builds it)")
    assert _c() is not None and TABLE.unsure_ascii is not None
    seen: list[str] = []

    def spy(s: str, t: Any) -> Any:
        seen.append(s)
        return frontmatter._scalar(s, t)

    text = "a: x\nb: 247 Main St\nc:\n- 'it''s'\n- z\n"
    got = _c().load_dumped(text, TABLE.unsure_ascii, {}, spy, TABLE, frontmatter._FAIL)
    assert got == {"a": "x", "b": "247 Main St", "c": ["it's", "z"]}
    assert seen == ["247 Main St"]  # quotes are read in C, only a resolver's character asks


def both_readers(text: str) -> None:
    """The C and the Python reader of yaml_dump's layout give the same answer (None included),
    whatever the text; with a fresh table, so the known-values cache plays no part."""
    if _c() is None:
        pytest.skip("the C extension is not built here")
    t = frontmatter._Table(RESOLVERS)
    want = frontmatter._load_dumped_py(text, t)
    got = frontmatter._load_dumped(text, frontmatter._Table(RESOLVERS))
    assert (want is None and got is None) or (
        want is not None and got is not None and same(got, want)
    ), f"{text!r}: C {got!r} != Python {want!r}"


@settings(max_examples=1500, deadline=None)
@given(st.one_of(dumped_shape(), handwritten(),
                 st.text(alphabet="ab:- '#\n\x7f\t\u00e9", max_size=30).map(lambda s: s + "\n")))
def test_c_and_python_readers_agree(text: str) -> None:
    both_readers(text)


@pytest.mark.parametrize(("text", "expected"), EDGES)
def test_c_and_python_readers_agree_on_edges(text: str, expected: Any) -> None:
    both_readers(text)
    both_readers(text + "\n")


def test_known_values_stay_bounded() -> None:
    for i in range(5000):
        assert frontmatter.load(f"a: {i}\nb: 1.{i}\n", RESOLVERS) == {"a": i, "b": float(f"1.{i}")}
    assert 0 < len(TABLE.known) <= 4096


def test_long_padded_lines_take_linear_time() -> None:
    """Possessive matching: these would take minutes if a line's scan were quadratic."""
    for text in ["k:" + " " * 50000 + ":\n", "k:" + " " * 50000 + "x\x01\n",
                 "k: " + "a " * 25000 + ":\n", "  " * 25000 + "-\x01\n",
                 "k: v\n" + " " * 50000 + "#\x01"]:
        assert frontmatter.load(text, RESOLVERS) is None


# --- split_front_matter ---------------------------------------------------------------------------


def split_reference(text: str) -> tuple[str | None, str]:
    """split_front_matter as it was, a loop over lines: the one-search version must not differ."""
    if not (text.startswith("---\n") or text.startswith("---\r\n")):
        return None, text
    start = text.index("\n") + 1
    pos = start
    while True:
        nl = text.find("\n", pos)
        line = text[pos:] if nl < 0 else text[pos:nl]
        if line.rstrip("\r ") in ("---", "..."):
            return text[start:pos], ("" if nl < 0 else text[nl + 1 :])
        if nl < 0:
            raise doc.DocumentError("front matter is not closed by a '---' line")
        pos = nl + 1


def split_both(text: str) -> None:
    try:
        want: Any = split_reference(text)
    except doc.DocumentError as exc:
        want = str(exc)
    try:
        got: Any = doc.split_front_matter(text)
    except doc.DocumentError as exc:
        got = str(exc)
    assert got == want, text


SPLIT_LINES = ["---", "...", "--- ", "---\r", "--- \r ", "---\r\r", " ---", "----", "-- -", "...x",
               ".. .", "x---", "---x", "--- x", "a: b", "a: ---", "", " ", "\r", "\t", "---\t"]


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(SPLIT_LINES), st.text(alphabet="-.\r\n\t x", max_size=6)),
                max_size=8),
       st.sampled_from(["\n", "\r\n", "\n\r"]), st.sampled_from(["", "\n", "\r\n", "x"]))
def test_split_front_matter_as_before(lines: list[str], sep: str, end: str) -> None:
    split_both(sep.join(lines) + end)
    split_both("---" + sep + sep.join(lines) + end)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=40))
def test_split_front_matter_as_before_on_any_text(text: str) -> None:
    split_both(text)
    split_both("---\n" + text)


def test_split_front_matter_examples() -> None:
    for text in ["---\n---\n", "---\n---", "---\r\n---\r\nb", "---\na: 1\n... \nb\n---\n", "---\n",
                 "---\na: 1\n", "---\na: ---\n----\n---\r \r\nbody\n---\n", "--- \na: 1\n---\n",
                 "---\n\n---\n\n", "---\na\n---x\n--- \n"]:
        split_both(text)
    assert doc.split_front_matter("---\na: 1\n---\nbody\n---\n") == ("a: 1\n", "body\n---\n")


@pytest.mark.parametrize("text", ["---\ndescription: x\n---\n", "---\ndescription: [x]\n---\n",
                                  "---\na: 1\ndescription:\n- x\n---\n"])
def test_description_is_refused_on_both_paths(text: str) -> None:
    with pytest.raises(doc.DocumentError, match="Markdown body"):
        doc.parse_index(text)


# --- the writer -----------------------------------------------------------------------------

DUMP_RESOLVERS = doc._DumperBase.yaml_implicit_resolvers


def check_dump(k: str, v: Any) -> bool:
    """True when the fast writer answered (it must then write what PyYAML writes)."""
    fast = frontmatter.dump_entry(k, v, DUMP_RESOLVERS)
    if fast is not None:
        slow = doc.yaml_dump({k: v})
        assert fast == slow, f"{k!r}: {v!r}: fast {fast!r} != PyYAML {slow!r}"
    return fast is not None


dump_values = st.one_of(
    st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(), scalar_text,
    st.text(max_size=12), st.text(st.characters(min_codepoint=32, max_codepoint=126)),
    st.lists(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), scalar_text,
                       st.text(max_size=6)), max_size=4),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@settings(max_examples=3000, deadline=None)
@given(st.one_of(key, fresh_key), dump_values)
def test_one_entry_dumps_as_pyyaml_does(k: str, v: Any) -> None:
    check_dump(k, v)


@pytest.mark.parametrize("text", [*TRICKY, *PLAIN, "", " ", "a ", " a", "-x", "?x", "- x",
                                  "? x", "(x)", ";x", "^x", "$x", "=x", "~x", "/x", ".x", "+x",
                                  "_x", "a|b", "a>b", "a&b", "a*b", "a!b", "a%b", "a#b", "a #b",
                                  "x---", "--- x", "...x", "a  b", "1.5.6", "0o17", "0b101"])
def test_edge_strings_dump_as_pyyaml_does(text: str) -> None:
    check_dump("k", text)
    check_dump("k", [text, "x"])


def test_cocli_shaped_values_take_the_fast_writer() -> None:
    """Not vacuous: what an overlay usually carries is written without PyYAML."""
    for k, v in [("email", "info@acme.example"), ("website", "https://www.acme.example/"),
                 ("phone_number", "+1-555-0100"), ("rating", 4.6), ("employees", 12),
                 ("linkedin_url", None), ("address", "261 Main Street, Tucson, AZ"),
                 ("hours", "Mon-Fri 8:00-17:00"), ("services", ["consultation", "repair"]),
                 ("tier", "yes"), ("note", ""), ("tags", [])]:
        assert check_dump(k, v), (k, v)


def test_long_keys_and_values_dump_as_pyyaml_does() -> None:
    """PyYAML writes a key of more than 128 characters as a complex key, and folds a string
    at its line width: the fast writer must leave both to it."""
    for n in (127, 128, 129, 1000):
        check_dump("k" * n, "v")
    for n in (4096, 4097, 65_530, 65_536, 70_000):
        text = ("ab " * n)[:n].strip()
        check_dump("k", text)
        check_dump("k", [text])
    assert check_dump("k" * 128, "v") and not check_dump("k" * 129, "v")


def test_keys_longer_than_pyyaml_allows_are_left_to_it() -> None:
    """PyYAML refuses a simple key of more than 1,024 characters; the fast reader must not
    accept the document either."""
    for n in (1024, 1025, 3000):
        assert check(f"{'k' * n}: v\n") is (n <= 1024)
        assert check(f"a: 1\n{'k' * n}:\n- x\n") is (n <= 1024)
