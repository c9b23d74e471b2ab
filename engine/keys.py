"""Every Redis key and channel name, in one place.

A shard's keys share the hash tag ``{hospital:date}`` so the commit script that writes them
touches one Redis Cluster slot.
"""

from __future__ import annotations


class Keys:
    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def epoch(self, shard_id: str) -> str:
        """The shard's fencing epoch: incremented by each host that takes the shard."""
        return f"{self.prefix}:{{{shard_id}}}:epoch"

    def sessions(self, shard_id: str) -> str:
        """Set of the shard's doctor-session ids."""
        return f"{self.prefix}:{{{shard_id}}}:sessions"

    def session(self, shard_id: str, session_id: str) -> str:
        """One doctor-session's msgpack snapshot."""
        return f"{self.prefix}:{{{shard_id}}}:s:{session_id}"

    def rules(self, hospital_id: str) -> str:
        """A hospital's rule state (policy and blacklist), shared by all its shards."""
        return f"{self.prefix}:hospital:{hospital_id}:rules"

    @property
    def catalog(self) -> str:
        """Hash: doctor-session id → shard id (how a client routes a request)."""
        return f"{self.prefix}:catalog"

    @property
    def placement(self) -> str:
        """Hash: shard id → host index, for shards pinned or moved off their default host."""
        return f"{self.prefix}:placement"

    @property
    def shards(self) -> str:
        """Set of every shard id ever created (for audits and reloads)."""
        return f"{self.prefix}:shards"

    @property
    def stock_channel(self) -> str:
        """Pub/sub channel of stock changes: one message per commit that changed stock."""
        return f"{self.prefix}:stock"

    # ----- the platform's catalog and accounts (written by the API) ---------------------------

    def seq(self, kind: str) -> str:
        """Counter behind the ids of one kind (hospital, department, doctor, session, patient)."""
        return f"{self.prefix}:seq:{kind}"

    def entity(self, kind: str, entity_id: str | int) -> str:
        """Hash of one hospital, department, doctor, doctor-session or patient."""
        return f"{self.prefix}:{kind}:{entity_id}"

    def children(self, kind: str, parent_id: str, child: str) -> str:
        """Set of a parent's children, e.g. a hospital's departments."""
        return f"{self.prefix}:{kind}:{parent_id}:{child}"

    def all(self, kind: str) -> str:
        """Set of every id of one kind."""
        return f"{self.prefix}:all:{kind}"

    def patient_by(self, field: str) -> str:
        """Hash: unique patient field (phone, hashed id number) → patient id."""
        return f"{self.prefix}:patient-by:{field}"

    def patient_bookings(self, patient_id: int) -> str:
        """Set of a patient's booking ids."""
        return f"{self.prefix}:patient:{patient_id}:bookings"

    @property
    def catalog_channel(self) -> str:
        """Pub/sub channel: a doctor-session was added to the catalog."""
        return f"{self.prefix}:catalog-events"

    @property
    def api_secret(self) -> str:
        """The token-signing key, generated once and shared by every API worker."""
        return f"{self.prefix}:api-secret"
