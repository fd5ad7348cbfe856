"""Bounded uid -> user name cache in front of NSS (the `pwd` module)."""

from __future__ import annotations

import pwd
import time
from collections import OrderedDict
from collections.abc import Callable


def _pwd_lookup(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, OverflowError, ValueError):
        # KeyError: no such user; Overflow/Value: uid outside uid_t (e.g. -1 sentinel).
        return None


class UserNames:
    """LRU cache of uid -> name, caching misses too.

    NSS can be slow (LDAP, sssd) and is hit per event otherwise, so unknown uids are
    cached as None. Negative entries expire after `negative_ttl_s` so a user created
    after start-up is eventually picked up; positive entries live until evicted.
    """

    def __init__(
        self,
        max_entries: int = 4096,
        lookup: Callable[[int], str | None] = _pwd_lookup,
        negative_ttl_s: float | None = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.max_entries = max_entries
        self._lookup = lookup
        self._negative_ttl_s = negative_ttl_s
        self._clock = clock
        # uid -> (name, expiry or None for never)
        self._cache: OrderedDict[int, tuple[str | None, float | None]] = OrderedDict()
        self.hits = 0
        self.misses = 0  # lookups that went to NSS
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._cache)

    def name(self, uid: int) -> str | None:
        """User name for `uid`, or None when NSS does not know it."""
        entry = self._cache.get(uid)
        if entry is not None:
            name, expiry = entry
            if expiry is None or self._clock() < expiry:
                self._cache.move_to_end(uid)
                self.hits += 1
                return name
            del self._cache[uid]
        self.misses += 1
        name = self._lookup(uid)
        expiry = None
        if name is None and self._negative_ttl_s is not None:
            expiry = self._clock() + self._negative_ttl_s
        while len(self._cache) >= self.max_entries:
            self._cache.popitem(last=False)
            self.evictions += 1
        self._cache[uid] = (name, expiry)
        return name

    def clear(self) -> None:
        self._cache.clear()

    def stats(self) -> dict[str, int]:
        return {
            "size": len(self._cache),
            "max_entries": self.max_entries,
            "hits": self.hits,
            "misses": self.misses,
            "evictions": self.evictions,
        }
