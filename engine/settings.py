"""The one settings object, built from the environment in one place (``Settings.from_env``).

| variable                    | meaning                                                        |
| --------------------------- | -------------------------------------------------------------- |
| SLOTENGINE_REDIS_URL        | Redis to use; unset = start a private embedded server          |
| SLOTENGINE_RAY_ADDRESS      | Ray cluster to join (e.g. ``auto``); unset = start a local one |
| SLOTENGINE_HOSTS            | host actors in the pool (default: CPUs of this machine)        |
| SLOTENGINE_HOSTS_PER_NODE   | instead: a pool that follows the nodes, N hosts on each        |
| SLOTENGINE_HOST_CPUS        | Ray CPUs reserved per host actor (default 1)                   |
| SLOTENGINE_DATA_DIR         | embedded Redis data folder (default ``./.slotengine``)         |
| SLOTENGINE_NAMESPACE        | Ray namespace, actor names and Redis key prefix                |
| SLOTENGINE_MAX_BATCH        | most requests a host decides in one group commit               |
| SLOTENGINE_TICK_SECONDS     | period of the host's timers (hold expiry, opening, closing)    |
| SLOTENGINE_REDIS_TIMEOUT    | seconds before a Redis call counts as failed                   |
| SLOTENGINE_REDIS_APPENDFSYNC| embedded Redis: ``always`` (default) fsyncs before it answers  |
| SLOTENGINE_ADMIN_TOKEN      | the platform admin's bearer token (generated when unset)       |
| SLOTENGINE_SECRET           | key that signs patients' tokens (generated once, kept in Redis) |
| SLOTENGINE_TIMEZONE         | the hospitals' local time zone (default Asia/Shanghai)         |
| SLOTENGINE_RATE_PER_SECOND  | booking requests a patient may make per second, per worker     |
| SLOTENGINE_RATE_BURST       | ... and in a burst                                             |
| SLOTENGINE_MAX_BODY_BYTES   | largest request body the API reads                             |
| SLOTENGINE_TOKEN_DAYS       | lifetime of a patient's bearer token                           |
| SLOTENGINE_NOTICE_SENDER    | ``module:Class`` that delivers notifications (default: Redis)  |
| SLOTENGINE_MOVABLE_CLOCK    | ``1`` lets the admin API move the clock (tests and demos only) |
| SLOTENGINE_ADDRESS_LIMITS   | ``off`` turns the per-client-address limits off (load tests)   |
| SLOTENGINE_TRUSTED_PROXIES  | networks whose ``X-Forwarded-For`` is believed (comma list)    |
| SLOTENGINE_LIMIT_*          | ``N/S``: N requests per S seconds (see ``Limit`` below)        |
| SLOTENGINE_ARGON2_CONCURRENCY | password hashes computed at once per worker                  |
| SLOTENGINE_HIS_ALLOW_NETWORKS | private networks an HIS URL may point into (comma list)      |
| SLOTENGINE_HIS_MAX_BYTES    | largest HIS answer read                                        |
| SLOTENGINE_METRICS_PUBLIC   | ``1`` serves ``/metrics`` without a bearer token               |
| SLOTENGINE_DOCS             | ``0`` turns ``/docs``, ``/redoc`` and ``/openapi.json`` off    |
| SLOTENGINE_ENDED_KEPT       | ended bookings a doctor-session keeps whole before compacting  |
| SLOTENGINE_IDEMPOTENCY_KEPT | request keys of compacted bookings kept per doctor-session     |
| SLOTENGINE_OUTBOX_MAX_TRIES | deliveries of an outbox entry before it goes to the dead letters |
| SLOTENGINE_COURIERS | couriers, each carrying the outbox of its part of the shards (1) |

Ray's own token authentication is configured by Ray's variables (``RAY_AUTH_MODE``,
``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``); a driver joining a cluster started on this
machine finds the token at ``~/.ray/auth_token`` by itself.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

PREFIX = "SLOTENGINE_"
_LIMIT = re.compile(r"^([0-9]+)/([0-9]+(?:\.[0-9]+)?)$")


class Limit(BaseModel):
    """``count`` requests per ``seconds`` (a GCRA: one every ``seconds / count``, with a burst
    of ``count``), written ``N/S`` in the environment, e.g. ``10/60``."""

    model_config = ConfigDict(frozen=True)

    count: int = Field(ge=1)
    seconds: float = Field(gt=0)

    @classmethod
    def parse(cls, value: object) -> object:
        if isinstance(value, str):
            match = _LIMIT.match(value.strip())
            if match is None:
                raise ValueError(f"a limit is N/S (N requests per S seconds), got {value!r}")
            return {"count": int(match[1]), "seconds": float(match[2])}
        return value

    @property
    def rate(self) -> float:
        """Requests per second, sustained."""
        return self.count / self.seconds

    def __str__(self) -> str:
        return f"{self.count}/{self.seconds:g}"


def _networks(value: object) -> object:
    """A comma (or space) separated list of networks, as a tuple of strings."""
    if isinstance(value, str):
        return tuple(x for x in re.split(r"[,\s]+", value) if x)
    return value


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    redis_url: str | None = None
    # the store is a Redis Cluster (``redis_url`` names any node of it): every process talks to
    # it through redis-py's ``RedisCluster`` (engine/store/connect.py); with no ``redis_url``,
    # ``up`` starts a local one (3 masters, 3 replicas) under the data folder
    redis_cluster: bool = False
    ray_address: str | None = None
    hosts: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=1024)
    # A pool that follows the cluster (``actors/pool.py PoolFollower``): this many hosts on
    # every node offering host places, started as nodes join, retired with them; 0: a fixed
    # pool of ``hosts`` (which then must not be set as well)
    hosts_per_node: int = Field(default=0, ge=0, le=64)
    pool_follow_seconds: float = Field(default=2.0, gt=0)  # how often the pool looks at nodes
    host_cpus: float = Field(default=1.0, ge=0)
    # The Ray resource a host actor needs one of (ray_cluster.yaml gives it to the workers, the
    # local Ray of ``up`` to its node), so hosts land only where the operator offers places;
    # empty: none needed (any node with CPU).
    host_resource: str = Field(default="slot_host", pattern=r"^[A-Za-z0-9_]*$")
    data_dir: Path = Path(".slotengine")
    namespace: str = Field(default="slotengine", pattern=r"^[A-Za-z0-9_.-]+$")
    max_batch: int = Field(default=4096, ge=1)
    tick_seconds: float = Field(default=0.5, gt=0)
    redis_timeout: float = Field(default=2.0, gt=0)
    host_channel: bool = True  # batches go over a direct socket to the host, not a Ray call
    host_call_seconds: float = Field(default=10.0, gt=0)  # deadline of a call to a host
    # Host leases (actors/lease.py): renewed every ``lease_renew_seconds`` from a thread of the
    # host's own; a host whose lease is ``lease_seconds`` old is out of the placement.
    lease_seconds: float = Field(default=1.5, gt=0)
    lease_renew_seconds: float = Field(default=0.3, gt=0)
    # CPU niceness of the hosts (the booking path, like the API workers) and of the courier and
    # the dispatcher (back-office work): under a crowd the booking path gets the cores first,
    # and notices, records and HIS deliveries catch up after (Ray starts its workers at 15)
    host_nice: int = Field(default=0, ge=-20, le=19)
    background_nice: int = Field(default=19, ge=-20, le=19)
    redis_appendfsync: Literal["always", "everysec"] = "always"
    # What an acknowledged booking has survived (engine/store/shards.py ``Durability``): ``local``
    # the master's AOF fsync (``WAITAOF 1 0``), ``replica`` also a replica's (``WAITAOF 1 1``),
    # ``replica-received`` the master's AOF and a replica's memory (``WAIT 1``);
    # a commit not confirmed within ``durability_wait_ms`` is answered ``outcome_unknown``
    durability: Literal["local", "replica", "replica-received"] = "local"
    durability_wait_ms: int = Field(default=500, ge=1, le=60_000)
    # the API (api/)
    admin_token: str | None = Field(default=None, min_length=16)
    secret: str | None = Field(default=None, min_length=16)
    timezone: str = "Asia/Shanghai"
    rate_per_second: float = Field(default=5.0, gt=0)
    rate_burst: int = Field(default=10, ge=1)
    max_body_bytes: int = Field(default=8192, ge=256)
    token_days: int = Field(default=7, ge=1)
    notice_sender: str = Field(default="engine.store.notices:NoticeBoard", pattern=r"^[\w.]+:\w+$")
    movable_clock: bool = False
    # security and abuse (issue 11)
    address_limits: bool = True
    trusted_proxies: tuple[str, ...] = ()
    limit_register_address: Limit = Limit(count=20, seconds=3600)
    limit_register_phone: Limit = Limit(count=3, seconds=3600)
    limit_login_address: Limit = Limit(count=60, seconds=60)
    limit_login_phone: Limit = Limit(count=10, seconds=300)
    limit_pay_patient: Limit = Limit(count=20, seconds=60)
    limit_cancel_patient: Limit = Limit(count=10, seconds=60)
    limit_book_address: Limit = Limit(count=200, seconds=1)
    argon2_concurrency: int = Field(default=2, ge=1, le=64)
    his_allow_networks: tuple[str, ...] = ()
    his_max_bytes: int = Field(default=4 << 20, ge=1024)
    metrics_public: bool = False
    docs: bool = True
    ended_kept: int = Field(default=256, ge=1, le=2048)
    idempotency_kept: int = Field(default=4096, ge=0, le=1_000_000)
    outbox_max_tries: int = Field(default=5, ge=1, le=1000)
    couriers: int = Field(default=1, ge=1, le=64)  # the outbox's partitions (``outbox.py``)

    _limits = field_validator(
        "limit_register_address",
        "limit_register_phone",
        "limit_login_address",
        "limit_login_phone",
        "limit_pay_patient",
        "limit_cancel_patient",
        "limit_book_address",
        mode="before",
    )(lambda value: Limit.parse(value))

    @field_validator("trusted_proxies", "his_allow_networks", mode="before")
    @classmethod
    def _split_networks(cls, value: object) -> object:
        networks = _networks(value)
        for network in networks if isinstance(networks, tuple) else ():
            ipaddress.ip_network(network, strict=False)  # ValueError: not a network
        return networks

    @model_validator(mode="after")
    def _one_pool_size(self) -> Settings:
        if self.hosts_per_node and "hosts" in self.model_fields_set:
            raise ValueError(
                "SLOTENGINE_HOSTS (a fixed pool of that many hosts) and SLOTENGINE_HOSTS_PER_NODE "
                "(a pool that follows the nodes) exclude each other: set only one"
            )
        return self

    @property
    def durability_wait(self) -> int:
        """Milliseconds a commit waits for its durability: ``durability_wait_ms``, cut to
        80% of ``redis_timeout`` (the wait is part of the commit's round trip)."""
        return max(1, min(self.durability_wait_ms, int(self.redis_timeout * 800)))

    @property
    def follows_nodes(self) -> bool:
        """The pool follows the cluster's nodes (``hosts_per_node``), not a fixed size."""
        return self.hosts_per_node > 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Read ``SLOTENGINE_*`` variables (empty values count as unset); overrides win."""
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {
            name[len(PREFIX) :].lower(): value
            for name, value in environ.items()
            if name.startswith(PREFIX)
            and value != ""
            and name[len(PREFIX) :].lower() in cls.model_fields
        }
        values.update(overrides)
        return cls.model_validate(values)
