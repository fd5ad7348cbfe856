"""Profiles: which event types a run records, and how verbosely.

`default` is the set worth keeping on every host: process lifecycle, the
file changes attackers make (create, rename, link, permission and timestamp
changes), `open` only for watched sensitive paths, and network connections,
listeners and DNS queries. `full` is everything,
including every open for writing, unlink, rmdir and truncate.
"""

from __future__ import annotations

from dataclasses import dataclass

from ktrail.loader.catalog import CATALOG


@dataclass(frozen=True)
class Profile:
    name: str
    events: frozenset[str]
    open_writes: bool  # `open` for every write, not only watched paths
    description: str


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            "default",
            frozenset({"exec", "fork", "exit", "create", "open", "rename", "link", "symlink",
                       "chmod", "chown", "utimes", "connect", "accept", "bind", "listen",
                       "dns"}),
            open_writes=False,
            description="always-on audit set: low volume, high value",
        ),
        Profile("full", frozenset(CATALOG), open_writes=True,
                description="every event type, every open for writing"),
    )
}
