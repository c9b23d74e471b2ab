"""The one settings object, built from the environment in one place (``Settings.from_env``).

| variable                    | meaning                                                        |
| --------------------------- | -------------------------------------------------------------- |
| SLOTENGINE_REDIS_URL        | Redis to use; unset = start a private embedded server          |
| SLOTENGINE_RAY_ADDRESS      | Ray cluster to join (e.g. ``auto``); unset = start a local one |
| SLOTENGINE_HOSTS            | host actors in the pool (default: CPUs of this machine)        |
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

Ray's own token authentication is configured by Ray's variables (``RAY_AUTH_MODE``,
``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``); a driver joining a cluster started on this
machine finds the token at ``~/.ray/auth_token`` by itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

PREFIX = "SLOTENGINE_"


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    redis_url: str | None = None
    ray_address: str | None = None
    hosts: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=1024)
    host_cpus: float = Field(default=1.0, ge=0)
    data_dir: Path = Path(".slotengine")
    namespace: str = Field(default="slotengine", pattern=r"^[A-Za-z0-9_.-]+$")
    max_batch: int = Field(default=4096, ge=1)
    tick_seconds: float = Field(default=0.5, gt=0)
    redis_timeout: float = Field(default=2.0, gt=0)
    redis_appendfsync: Literal["always", "everysec"] = "always"
    # the API (api/)
    admin_token: str | None = Field(default=None, min_length=16)
    secret: str | None = Field(default=None, min_length=16)
    timezone: str = "Asia/Shanghai"
    rate_per_second: float = Field(default=5.0, gt=0)
    rate_burst: int = Field(default=10, ge=1)
    max_body_bytes: int = Field(default=8192, ge=256)
    token_days: int = Field(default=7, ge=1)
    notice_sender: str = Field(default="engine.notices:NoticeBoard", pattern=r"^[\w.]+:\w+$")
    movable_clock: bool = False

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
