"""The audit trail store: an SQLite database (WAL) the sensor writes while
`ktrail query` and `ktrail tree` read it from other processes.

schema.py    tables, migrations, opening a file safely
rows.py      event dicts -> rows
writer.py    the batched writer thread and its bounded queue
retention.py deletion by age and size
query.py     read-only queries and the canned filters
tree.py      a process's ancestry and descendants
Times, durations and timestamps are parsed by ktrail.units.
docs/store.md describes it for users.
"""

from ktrail.store.schema import StoreError

DEFAULT_PATH = "/var/lib/ktrail/trail.db"
# Below this, retention would delete nearly everything at every pass.
MIN_STORE_BYTES = 4 << 20

__all__ = ["DEFAULT_PATH", "MIN_STORE_BYTES", "StoreError"]
