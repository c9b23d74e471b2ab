"""Every Redis key and channel name, in one place.

Every script and transaction touches one Redis Cluster slot, so that the same code runs on one
Redis and on a cluster: a shard's keys share the hash tag ``{hospital:date}``; the keys written
together in one scope share that scope's tag — a scope's bans and their version
``{scope}``, a hospital's manual lists ``{hospital}``, a patient's notices and their sent
markers ``{patient id}``, the placement directory with its version and drained nodes
``{placement}``, the platform-wide outbox and its dead letters ``{outbox}`` (a shard's outbox
stream has the shard's tag). ``engine/store/layout.py`` moves the keys of an older layout once.
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
        """A hospital's policy (msgpack), shared by all its shards."""
        return f"{self.prefix}:hospital:{hospital_id}:rules"

    def bans(self, scope: str) -> str:
        """Hash: patient → banned until (epoch), of one hospital or of the platform."""
        return f"{self.prefix}:bans:{{{scope}}}"

    def bans_version(self, scope: str) -> str:
        """Counter bumped by every change of a scope's bans (hosts reload when it moves)."""
        return f"{self.prefix}:bans:{{{scope}}}:version"

    def patient_list(self, hospital_id: str, kind: str) -> str:
        """Hash: patient → JSON {reason, until, by, at}; a hospital's manual ``blacklist`` or
        ``whitelist`` (whitelisted patients are not banned by the rules until ``until``)."""
        return f"{self.prefix}:hospital:{{{hospital_id}}}:{kind}"

    def patient_tags(self, hospital_id: str) -> str:
        """Hash: patient → JSON list of a hospital's tags (groups) for that patient."""
        return f"{self.prefix}:hospital:{hospital_id}:tags"

    def conduct(self, scope: str, patient_id: int) -> str:
        """Hash: "<booking id>:<kind>" → time, a patient's violations in one scope."""
        return f"{self.prefix}:conduct:{scope}:{patient_id}"

    def conduct_scopes(self, patient_id: int) -> str:
        """Set of the scopes (hospital ids, ``platform``) where a patient has violations."""
        return f"{self.prefix}:patient:{patient_id}:conduct"

    def shard_outbox(self, shard_id: str) -> str:
        """Stream of a shard's outbox events (refunds, notices, violations), one entry per
        commit that had any, written by the commit script (``outbox.py``)."""
        return f"{self.prefix}:{{{shard_id}}}:outbox"

    def outbox_doorbell(self, partition: int = 0) -> str:
        """Sorted set: shard id → commits that wrote to its outbox since its courier last
        found it empty (rung in the commit's pipeline), one per courier (``outbox.py``)."""
        return f"{self.prefix}:outbox:doorbell:{partition}"

    @property
    def outbox(self) -> str:
        """The platform-wide outbox stream: entries of the releases before the shards' own
        streams, and dead letters put back; the courier reads it with the shards'."""
        return f"{self.prefix}:{{outbox}}"

    @property
    def outbox_dead(self) -> str:
        """Stream of outbox entries that failed ``outbox_max_tries`` times (dead letters): kept
        for the platform admin to retry or drop, so that everything behind them flows on (a
        retry moves one back to ``outbox``, in one transaction: they share the tag)."""
        return f"{self.prefix}:{{outbox}}:dead"

    def commit_seq(self, shard_id: str) -> str:
        """The shard's commit counter, bumped by every commit script: read back after a round
        trip that failed, it tells whether the commit happened."""
        return f"{self.prefix}:{{{shard_id}}}:seq"

    def hold_releases(self, scope: str, patient_id: int, date: str) -> str:
        """Sorted set: booking id → time, the holds a patient let go (expired or cancelled
        unpaid) in one scope on one local day; past the policy's free ones, each is abuse."""
        return f"{self.prefix}:hold-releases:{scope}:{patient_id}:{date}"

    def limit(self, name: str, subject: str) -> str:
        """A shared rate limit's state (GCRA: the theoretical arrival time) for one subject."""
        return f"{self.prefix}:limit:{name}:{subject}"

    @property
    def upgrades(self) -> str:
        """Hash: upgrade step name → when it ran (steps run once per installation)."""
        return f"{self.prefix}:upgrades"

    @property
    def clock(self) -> str:
        """Seconds added to the wall clock (a movable clock for tests and demos)."""
        return f"{self.prefix}:clock-offset"

    @property
    def clock_channel(self) -> str:
        return f"{self.prefix}:clock"

    def payment(self, booking_id: str) -> str:
        """Hash: the sandbox gateway's payment for one booking (its order), with its refunds
        as fields ``r:<refund key>`` → amount (one key: the refund script touches one slot)."""
        return f"{self.prefix}:payment:{booking_id}"

    @property
    def payments(self) -> str:
        """Set of every booking id with a payment (for audits)."""
        return f"{self.prefix}:payments"

    @property
    def pending_payments(self) -> str:
        """Sorted set: booking id → charge time, until the engine's answer is recorded."""
        return f"{self.prefix}:payments:pending"

    @property
    def notices(self) -> str:
        """Stream of every notification sent (the operator's view)."""
        return f"{self.prefix}:notices"

    def patient_notices(self, patient_id: int) -> str:
        """List of a patient's latest notifications, newest first."""
        return f"{self.prefix}:patient:{{{patient_id}}}:notices"

    def sent(self, patient_id: int, notice_id: str) -> str:
        """Marks a notification as delivered, so a replayed outbox does not send it twice (in
        its patient's slot, with the list it goes to)."""
        return f"{self.prefix}:patient:{{{patient_id}}}:sent:{notice_id}"

    @property
    def catalog(self) -> str:
        """Hash: doctor-session id → shard id (how a client routes a request)."""
        return f"{self.prefix}:catalog"

    @property
    def placement(self) -> str:
        """Hash: shard id → host index, for shards pinned or moved off their default host."""
        return f"{self.prefix}:{{placement}}"

    @property
    def pool_size(self) -> str:
        """Integer: how many host indices a pool that follows the nodes has numbered (hosts
        ``0 .. n-1``, some retired with their node; ``actors/pool.py PoolFollower``)."""
        return f"{self.prefix}:pool:size"

    def lease(self, host: int) -> str:
        """String with a TTL: host ``host`` is alive (its incarnation, node and start)."""
        return f"{self.prefix}:lease:{host}"

    @property
    def draining(self) -> str:
        """Set of Ray node ids being drained: their hosts are out of the placement."""
        return f"{self.prefix}:{{placement}}:draining"

    @property
    def placement_version(self) -> str:
        """Counter: bumped by every change of ``placement`` (in the same transaction)."""
        return f"{self.prefix}:{{placement}}:version"

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

    @property
    def admin_by_login(self) -> str:
        """Hash: admin login → admin id."""
        return f"{self.prefix}:admin-by:login"

    def patient_bookings(self, patient_id: int) -> str:
        """Set of a patient's booking ids."""
        return f"{self.prefix}:patient:{patient_id}:bookings"

    @property
    def catalog_channel(self) -> str:
        """Pub/sub channel: a doctor-session was added to the catalog."""
        return f"{self.prefix}:catalog-events"

    @property
    def token_versions(self) -> str:
        """Hash: patient id → token version; a logout or a new password bumps it, and every
        token issued with an older version stops working (patients not in it are at 1)."""
        return f"{self.prefix}:patient-token-versions"

    @property
    def token_channel(self) -> str:
        """Pub/sub channel: ``<patient>:<version>`` when a patient's tokens were revoked."""
        return f"{self.prefix}:token-versions"

    @property
    def api_secret(self) -> str:
        """The token-signing key, generated once and shared by every API worker."""
        return f"{self.prefix}:api-secret"

    # ----- the back office's read model (backoffice/record_book.py) and its deliveries
    #
    # One hospital's records, their indexes, marks, numbers, tallies and sales share the tag
    # ``{hospital}``, so the indexer's transaction for a group of one hospital's sessions
    # touches one Redis Cluster slot; the changed, claimed and unreadable sets of one indexer
    # (one courier's part of the hospitals, ``changed_sessions_of``) share one tag:
    # ``{records}`` for courier 0's (as before there were parts), ``{records:<p>}`` else.

    def _records_tag(self, partition: int) -> str:
        return "{records}" if partition == 0 else f"{{records:{partition}}}"

    def changed_sessions_of(self, partition: int) -> str:
        """``changed_sessions`` of courier ``partition``'s hospitals (``partition_of``)."""
        return f"{self.prefix}:{self._records_tag(partition)}:changed"

    def changed_claimed_of(self, partition: int) -> str:
        return f"{self.prefix}:{self._records_tag(partition)}:claimed"

    def changed_unreadable_of(self, partition: int) -> str:
        return f"{self.prefix}:{self._records_tag(partition)}:unreadable"

    @property
    def changed_sessions(self) -> str:
        """Set of snapshot keys committed since the records last looked (a commit's
        follow-up)."""
        return f"{self.prefix}:{{records}}:changed"

    @property
    def changed_claimed(self) -> str:
        """Snapshot keys the records indexer took and has not finished (redone after a crash)."""
        return f"{self.prefix}:{{records}}:claimed"

    @property
    def changed_unreadable(self) -> str:
        """Snapshot keys the indexer could not decode: set aside for an operator, not retried."""
        return f"{self.prefix}:{{records}}:unreadable"

    def records(self, hospital_id: str) -> str:
        """Hash: booking id → packed ``Record``, one hospital's."""
        return f"{self.prefix}:records:{{{hospital_id}}}"

    def record_marks(self, hospital_id: str) -> str:
        """Hash: session id → what its rows were when its records were last written
        (``record_book.marks_of``); delete it to make the indexer rebuild the hospital's
        records."""
        return f"{self.records(hospital_id)}:marks"

    def record_numbers(self, hospital_id: str, system: str) -> str:
        """Hash: booking id → the number the ``his`` or the ``insurance`` gave it."""
        return f"{self.records(hospital_id)}:numbers:{system}"

    def record_index(self, hospital_id: str, kind: str, value: str = "") -> str:
        """Sorted set of one hospital's booking ids by slot time: kind ``all``, ``dep``,
        ``doc``, ``p`` (patient) or ``s`` (state)."""
        return f"{self.records(hospital_id)}:by:{kind}:{value}"

    def record_tally(self, hospital_id: str, date: str) -> str:
        """Hash: a hospital's analytics counts of one visit date (``analytics.tally_delta``)."""
        return f"{self.records(hospital_id)}:tally:{date}"

    @property
    def tally_version(self) -> str:
        """The layout of the daily tallies kept (made from the records when it is not ours)."""
        return f"{self.prefix}:records:tally-version"

    @property
    def record_hospitals(self) -> str:
        """Set of the hospitals that have records (and tallies): what a query over every
        hospital, and the platform's report, read."""
        return f"{self.prefix}:records:hospitals"

    def patient_record_hospitals(self, patient_id: int) -> str:
        """Set of the hospitals where a patient has records (a patient's query reads those)."""
        return f"{self.prefix}:records:patient:{{{patient_id}}}:hospitals"

    def sales(self, hospital_id: str) -> str:
        """Hash: session id → packed ``SessionSale``, one hospital's."""
        return f"{self.prefix}:sales:{{{hospital_id}}}"

    def sales_index(self, hospital_id: str) -> str:
        """Sorted set of a hospital's session ids by visit time."""
        return f"{self.sales(hospital_id)}:by-time"

    def his_config(self, hospital_id: str) -> str:
        """JSON: a hospital's HIS and social-insurance endpoints (backoffice/deliveries.py)."""
        return f"{self.prefix}:hospital:{hospital_id}:his"

    def his_cursor(self, hospital_id: str) -> str:
        """The HIS's ``updated_at`` up to which its schedules were pulled (api/his_import.py)."""
        return f"{self.his_config(hospital_id)}:cursor"

    def his_suspended(self, hospital_id: str) -> str:
        """Sorted set of HIS schedule ids suspended (by visit time): never released later."""
        return f"{self.his_config(hospital_id)}:suspended"

    @property
    def install_id(self) -> str:
        """This installation's random id, made once: it keeps HIS idempotency keys apart."""
        return f"{self.prefix}:install-id"

    @property
    def his_hospitals(self) -> str:
        """Set of hospitals with an HIS configured."""
        return f"{self.prefix}:his:hospitals"

    def deliveries(self, hospital_id: str) -> str:
        """The prefix of a hospital's delivery hashes (``<prefix>:<target>:<booking id>``)."""
        return f"{self.prefix}:deliveries:{{{hospital_id}}}"

    def delivery(self, hospital_id: str, target: str, booking_id: str) -> str:
        """Hash: one delivery's state (backoffice/deliveries.py)."""
        return f"{self.deliveries(hospital_id)}:{target}:{booking_id}"

    def deliveries_due(self, hospital_id: str) -> str:
        """Sorted set of a hospital's pending deliveries by the time they are next tried."""
        return f"{self.deliveries(hospital_id)}:due"

    def deliveries_failed(self, hospital_id: str) -> str:
        """Sorted set of a hospital's deliveries that gave up, by when."""
        return f"{self.deliveries(hospital_id)}:failed"

    def deliveries_pending(self, hospital_id: str) -> str:
        """Sorted set of a hospital's pending deliveries, by when they were made."""
        return f"{self.deliveries(hospital_id)}:pending"

    @property
    def delivery_hospitals(self) -> str:
        """Set of the hospitals deliveries were ever asked for (the dispatcher reads each's due
        set)."""
        return f"{self.prefix}:deliveries:hospitals"
