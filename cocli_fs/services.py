"""Background services that run beside the FUSE loop in the mount's one trio nursery.

Each service is startable (``await nursery.start(service.run)`` returns once it is ready),
reports a ``status()`` dict that ``cocli-fs status`` merges, and may register control-socket
commands. Which services run is decided here, from the config, in one place.
"""

from __future__ import annotations

from typing import Any, Protocol

import trio

from .control import ControlServer
from .state import NodeState


class Service(Protocol):
    name: str

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled; call ``task_status.started()`` once serving."""

    def status(self) -> dict[str, Any]:
        """Keys merged into ``cocli-fs status`` (DESIGN §8 names some of them)."""


def build_services(state: NodeState, control: ControlServer) -> list[Service]:
    """The services this node's config asks for, in start order."""
    cfg = state.config
    from .collector import Collector

    services: list[Service] = [Collector()]
    if cfg.gossip.enabled and cfg.gossip.peers:
        from .gossip import GossipService

        services.append(GossipService(state))
    if cfg.s3 is not None:
        from .s3sync import SyncService

        services.append(SyncService(state, control))
    if cfg.hub.enabled:
        # Also with interval 0: it then only serves `cocli-fs compact DATA` over the socket.
        from .compaction import CompactionService

        services.append(CompactionService(state, control))
    return services


def node_status(state: NodeState, services: list[Service]) -> dict[str, Any]:
    """What a running node (a mount or ``serve``) answers to ``status``: the state's keys,
    every service's, and the contract keys a service may leave out (no gossip: no peers;
    not the hub: pending records counted here, as ``status`` without a running node does)."""
    from .compaction import pending_records

    info = state.status()
    for s in services:
        info.update(s.status())
    info.setdefault("peers", [])
    info.setdefault("pending_records", pending_records(state))
    return info
