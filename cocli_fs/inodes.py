"""Inode numbers for the mount: a tree of the nodes the kernel currently knows.

Why a tree and not a path dict: renaming a folder then moves one node (its known children
follow), and a path is rebuilt by walking up a few levels. Numbers are stable while the kernel
holds a lookup reference (it tells us with ``forget``); nodes it forgot are dropped, so memory
follows what the kernel caches, not the size of the store.

Virtual nodes (``_fields/`` and its files) take numbers from a separate high range: tools that
sort a listing by inode number (``cp -r`` does) then handle the real files of an entity before
its ``_fields/`` view, so copying an entity writes its base files first.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyfuse3

from .routing import Route, Router

VIRTUAL_BASE = 1 << 48


class Node:
    __slots__ = (
        "children", "ino", "listed", "lookups", "name", "opens", "parent", "parts", "route", "seen"
    )

    def __init__(self, ino: int, parent: Node | None, name: str, parts: tuple[str, ...]) -> None:
        self.ino = ino
        self.parent = parent
        self.name = name
        self.parts = parts
        self.route: Route | None = None
        self.lookups = 0
        self.opens = 0
        self.seen = -1  # content generation the kernel's page cache holds (synthesised files)
        self.listed = False  # a folder the kernel may hold a listing of (invalidate on change)
        self.children: dict[str, Node] | None = None


class InodeTable:
    def __init__(self, router: Router) -> None:
        self.router = router
        root = Node(pyfuse3.ROOT_INODE, None, "", ())
        root.route = Route.ROOT
        root.lookups = 1
        self.root = root
        self.nodes: dict[int, Node] = {root.ino: root}
        self._next = pyfuse3.ROOT_INODE + 1
        self._next_virtual = VIRTUAL_BASE

    def __len__(self) -> int:
        return len(self.nodes)

    def get(self, ino: int) -> Node | None:
        return self.nodes.get(ino)

    def route(self, node: Node) -> Route:
        r = node.route
        if r is None:
            r = node.route = self.router.route(node.parts)
        return r

    def child(self, parent: Node, name: str, virtual: bool = False) -> Node:
        """The node for ``parent/name``, made on first use."""
        kids = parent.children
        if kids is None:
            kids = parent.children = {}
        node = kids.get(name)
        if node is None:
            if virtual:
                ino = self._next_virtual
                self._next_virtual += 1
            else:
                ino = self._next
                self._next += 1
            node = Node(ino, parent, name, (*parent.parts, name))
            kids[name] = node
            self.nodes[ino] = node
        return node

    def known(self, parts: tuple[str, ...]) -> Node | None:
        """The node for a path if the kernel may hold it (no node is created)."""
        node = self.root
        for p in parts:
            if node.children is None:
                return None
            nxt = node.children.get(p)
            if nxt is None:
                return None
            node = nxt
        return node

    def forget(self, ino: int, n: int) -> None:
        node = self.nodes.get(ino)
        if node is None or node is self.root:
            return
        node.lookups -= n
        if node.lookups <= 0 and node.opens <= 0:
            self._drop(node)

    def _drop(self, node: Node) -> None:
        self.nodes.pop(node.ino, None)
        parent = node.parent
        if parent is not None and parent.children and parent.children.get(node.name) is node:
            del parent.children[node.name]
        # Children the kernel still knows keep their numbers; they are found through
        # ``nodes`` and keep a reference to this parent for their path.

    def detach(self, node: Node) -> None:
        """The name is gone (unlink/rmdir): a new lookup of it must get a fresh node."""
        parent = node.parent
        if parent is not None and parent.children and parent.children.get(node.name) is node:
            del parent.children[node.name]

    def move(self, node: Node, parent: Node, name: str) -> None:
        """``rename``: the node (and its known subtree) now lives at ``parent/name``."""
        self.detach(node)
        old = parent.children.get(name) if parent.children else None
        if old is not None:
            self.detach(old)
        if parent.children is None:
            parent.children = {}
        parent.children[name] = node
        node.parent = parent
        node.name = name
        for n in _subtree(node):
            n.parts = (*n.parent.parts, n.name) if n.parent is not None else ()
            n.route = None


def _subtree(node: Node) -> Iterator[Node]:
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        if n.children:
            stack.extend(n.children.values())
