"""The merged views without a mount: one field's value reads ``_index.md`` only, and whatever
asks for more gets the whole entity, tags.lst included."""

from __future__ import annotations

from pathlib import Path

import pytest

from cocli_fs import sample
from cocli_fs.config import Config
from cocli_fs.document import TAGS, field_text, shown_base_of
from cocli_fs.state import DataDir, NodeState
from cocli_fs.views import Views


@pytest.fixture
def setup(tmp_path: Path) -> tuple[NodeState, Views, str, list[str]]:
    c = sample.write_tree(tmp_path, 1)[0]
    state = NodeState(DataDir(tmp_path), Config(node="n1"))
    state.load()
    target = f"companies/{c.slug}"
    tags = (tmp_path / target / "tags.lst").read_text().split()
    assert tags
    return state, Views(state), target, tags


def _count_tag_reads(state: NodeState, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    reads: list[str] = []
    real = state.base_tags

    def spy(target: str) -> list[str] | None:
        reads.append(target)
        return real(target)

    monkeypatch.setattr(state, "base_tags", spy)
    return reads


def test_one_field_does_not_read_tags_lst(
    setup: tuple[NodeState, Views, str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    state, views, target, tags = setup
    reads = _count_tag_reads(state, monkeypatch)
    full = state.base(target).fields()
    assert views.field_value(target, "name") == (True, full["name"])
    assert views.field_bytes(target, "name") == field_text("name", full["name"]).encode()
    assert views.field_value(target, "nope") == (False, None)
    assert views.field_bytes(target, "nope") is None
    assert views.field_value(target, "description") == (True, full["description"])
    assert reads == []  # _index.md only, so far
    assert views.field_value(target, TAGS) == (True, tags)  # tags: read now, once
    assert views.get(target).fields == full
    assert reads == [target]


def test_the_whole_view_after_a_partial_base_has_the_tags(
    setup: tuple[NodeState, Views, str, list[str]]
) -> None:
    state, views, target, tags = setup
    assert views.field_value(target, "name")[0]
    v = views.get(target)
    assert v.fields[TAGS] == tags and v.field_names() == list(state.base(target).fields())
    assert views.in_store(target, "tags.lst") is True


def test_a_partial_base_knows_index_but_not_tags_in_store(
    setup: tuple[NodeState, Views, str, list[str]]
) -> None:
    _state, views, target, _tags = setup
    assert views.field_value(target, "name")[0]
    assert views.in_store(target, "_index.md") is True
    assert views.in_store(target, "tags.lst") is None  # not read: the caller looks on disk


def test_mtime_without_a_view_is_the_newest_record(
    setup: tuple[NodeState, Views, str, list[str]]
) -> None:
    state, views, target, _tags = setup
    assert views.mtime_ns(target) == 0
    state.write_fields_sync(target, {"email": "a@b.c"})
    state.write_fields_sync(target, {"phone": "1"})
    newest = views.mtime_ns(target)
    assert newest > 0 and newest == views.get(target).mtime_ns


def test_index_with_overlay_fields_renders_without_reading_tags_lst(
    setup: tuple[NodeState, Views, str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    state, views, target, _tags = setup
    state.write_fields_sync(target, {"email": "new@example.org", TAGS: ["vip"]})
    reads = _count_tag_reads(state, monkeypatch)
    index = views.index_bytes(target)
    assert reads == []  # the first stat of such an entity: _index.md only
    assert index is not None and b"new@example.org" in index and b"vip" not in index
    assert views.mtime_ns(target) > 0
    assert views.field_value(target, "email") == (True, "new@example.org")
    # What needs tags gets the whole entity: tags.lst read now, the overlay's tags winning.
    assert views.field_value(target, TAGS) == (True, ["vip"])
    whole = views.get(target)
    assert whole.complete and whole.fields[TAGS] == ["vip"] and whole.tags == b"vip\n"
    assert reads == [target]
    # The same bytes as a view built whole from the start.
    assert Views(state).get(target).index == index == whole.index


def test_index_of_an_entity_with_tags_in_its_front_matter_reads_them(tmp_path: Path) -> None:
    ent = tmp_path / "companies" / "acme"
    ent.mkdir(parents=True)
    (ent / "_index.md").write_text("---\nname: Acme\ntags:\n- a\n---\n")
    (ent / "tags.lst").write_text("b\n")
    state = NodeState(DataDir(tmp_path), Config(node="n1"))
    state.load()
    state.write_fields_sync("companies/acme", {"email": "x@example.org"})
    views = Views(state)
    index = views.index_bytes("companies/acme")
    assert index == Views(state).get("companies/acme").index
    assert views.get("companies/acme").complete


def test_reads_store_says_when_a_field_needs_the_files_and_put_base_answers_it(
    setup: tuple[NodeState, Views, str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a field's first lookup asks before reading the files in a worker thread, and how
    it hands over what that thread read: afterwards no read happens on the loop."""
    state, views, target, _ = setup
    assert views.reads_store(target, "name") and views.reads_store(target, TAGS)
    paths = state.base_paths(target, tags=False)
    assert len(paths) == 1  # tags.lst not read without tags
    base, problems = shown_base_of([Path(p).read_bytes() for p in paths], False)
    assert problems == []
    views.put_base(target, base)
    assert not views.reads_store(target, "name")
    assert views.reads_store(target, TAGS)  # the base was read without tags.lst

    def no_reads(*_: object) -> None:
        raise AssertionError("read the store again")

    monkeypatch.setattr(state, "base", no_reads)
    full_name = field_text("name", views.field_value(target, "name")[1])
    assert views.field_bytes(target, "name") == full_name.encode()
    state.write_fields_sync(target, {"phone_number": "+1-555-0100"})
    assert not views.reads_store(target, "phone_number")  # the overlay answers
    other = sample.write_tree(state.data.root, 2)[1]
    assert views.reads_store(f"companies/{other.slug}", "phone_number")


def test_a_broken_base_read_elsewhere_is_shown_as_empty(
    setup: tuple[NodeState, Views, str, list[str]]
) -> None:
    _, views, target, _ = setup
    base, problems = shown_base_of([b"---\n: [\n---\n"], False)
    assert [name for name, _ in problems] == ["_index.md"]
    views.put_base(target, base)
    assert views.field_value(target, "name") == (False, None)
