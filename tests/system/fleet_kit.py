"""Tools for tests with several ingest nodes: node homes, a dock given several servers, a witness over all nodes.

Two kinds of fleet are tested.  In test_fleet_shared_storage.py the nodes
share one PostgreSQL database and one object store, as a force's do (a tus
upload begun on one node continues on another).  Here, and in
test_fleet_failover.py, the nodes have *separate* embedded homes that share
only what must be shared as files: the server keys (a receipt signed by any
node is one the cameras accept), the device registry and the dock tokens.
`clone_node_home()` makes such a home from the first node's.  A tus upload
begun on one of them is unknown to the other (HEAD answers 404), so failing
over means the dock starts that segment again on the survivor; what must not
change is that a camera lets go of a segment only when some node holds it.

`FleetCustody` is system_kit's `Custody` over several nodes: "held" means
held by one of them (database row and blob with the camera's very bytes),
checked at the moment a camera accepts a receipt and whenever a file leaves
a camera.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterable, Sequence

from openbwv.home import Home
from openbwv.registry import DeviceRegistry
from openbwv.verification import verify_paths

from .system_kit import Camera, Custody, DockStation


def clone_node_home(first: Home, root: Path) -> Home:
    """A second node's BWV_HOME: the first node's keys, device registry and dock tokens, none of its uploads.

    Call it after the cameras are enrolled and the dock added, before any server starts."""
    node = Home(Path(root))
    node.root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(first.server_dir, node.server_dir,
                    ignore=shutil.ignore_patterns("store", "uploads"))
    if first.config_file.exists():
        shutil.copy2(first.config_file, node.config_file)
    return node


class FleetDock(DockStation):
    """`bwv dock` given several `--server` URLs (one per node, in this order)."""

    def __init__(self, root: Path, dock_id: str, token: str, server_urls: Sequence[str], mounts: dict[str, Path]):
        super().__init__(root, dock_id, token, server_urls[0], mounts)
        self.server_urls = list(server_urls)

    def argv(self) -> list[str]:
        argv = super().argv()
        at = argv.index("--server")
        del argv[at:at + 2]
        return argv + [a for url in self.server_urls for a in ("--server", url)]


class FleetCustody(Custody):
    """Custody over several nodes: a segment is held if one node holds exactly the camera's file."""

    def __init__(self, homes: Sequence[Home]):
        super().__init__(homes[0])
        self.nodes = [Custody(h) for h in homes]
        for node in self.nodes:
            node.originals = self.originals  # one record of what each camera sealed

    def why_not_held(self, segment_hash: str) -> str | None:
        problems = [node.why_not_held(segment_hash) for node in self.nodes]
        if any(p is None for p in problems):
            return None
        return "; ".join(f"node {i + 1}: {p}" for i, p in enumerate(problems))

    def holders(self, segment_hash: str) -> list[int]:
        """The nodes (1-based) that hold this segment."""
        return [i + 1 for i, node in enumerate(self.nodes) if node.why_not_held(segment_hash) is None]

    def close(self) -> None:
        super().close()
        for node in self.nodes:
            node.close()


def assert_fleet_holds_exactly_once(custody: FleetCustody, cameras: Iterable[Camera]) -> dict[int, set[str]]:
    """Every segment the cameras sealed is held by exactly one node, and nothing else is held anywhere.

    Per node: a database row for each segment it holds, a blob with the
    camera's bytes, no other file in its store, and its store verifies as
    `bwv verify` checks it.  Returns node -> segment hashes it holds.
    """
    cameras = list(cameras)
    sealed = {info.segment_hash.hex(): (cam.device_id, info.sequence) for cam in cameras for info in cam.sealed}
    holders = {key: custody.holders(key) for key in sealed}
    assert {k: sealed[k] for k, h in holders.items() if len(h) != 1} == {}, \
        f"segments not held by exactly one node: {[(sealed[k], h) for k, h in holders.items() if len(h) != 1]}"
    by_node: dict[int, set[str]] = {i + 1: set() for i in range(len(custody.nodes))}
    for key, (node,) in holders.items():
        by_node[node].add(key)
    for n, node in enumerate(custody.nodes, 1):
        db = node.records()
        rows = {key: db.segment(key) for key in by_node[n]}
        assert {k: (r.device_id, r.sequence) for k, r in rows.items()} == {k: sealed[k] for k in by_node[n]}
        assert sum(s.segments for s in db.device_summaries()) == len(by_node[n]), f"node {n} holds other rows"
        files = sorted(p for p in node.store.rglob("*") if p.is_file()) if node.store.exists() else []
        assert files == sorted(node.blob_path(k) for k in by_node[n]), f"node {n}'s store holds other files"
        report = verify_paths([node.store], DeviceRegistry(node.home.registry_dir)) if files else None
        assert report is None or [p.line() for p in report.problems] == []
    return by_node


__all__ = ["FleetCustody", "FleetDock", "assert_fleet_holds_exactly_once", "clone_node_home"]
