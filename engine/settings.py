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

Ray's own token authentication is configured by Ray's variables (``RAY_AUTH_MODE``,
``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``); a driver joining a cluster started on this
machine finds the token at ``~/.ray/auth_token`` by itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

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
