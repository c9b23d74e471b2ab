"""Redis: every key name (``keys.py``), the shards' snapshots, epochs and group commit
(``shards.py``), the sandbox payment gateway, notices, the outbox's dead letters, and the
embedded server ``slotengine`` starts when none is configured."""
