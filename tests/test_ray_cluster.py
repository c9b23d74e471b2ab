"""``ray_cluster.yaml`` is a config Ray's cluster launcher accepts, checked offline with Ray's
own ``prepare_config`` and ``validate_config`` (no SSH, no cloud), and its start commands put
the host actors on the workers only."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from engine.settings import Settings

CONFIG = Path(__file__).resolve().parents[1] / "ray_cluster.yaml"


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(CONFIG.read_text())


def ray_starts(commands: list[str]) -> list[list[str]]:
    """Each ``ray start`` of a command list, split as the shell splits it."""
    starts = []
    for command in commands:
        for part in command.split("&&"):
            words = shlex.split(part)
            if words[:2] == ["ray", "start"]:
                starts.append(words)
    return starts


def option(words: list[str], name: str) -> str | None:
    for word in words:
        if word.startswith(f"{name}="):
            return word.split("=", 1)[1]
    return None


def test_the_launcher_accepts_it(config):
    prepared = prepare_config(config)
    validate_config(prepared)  # raises on any field Ray's schema refuses
    assert prepared["provider"]["type"] == "local"
    assert prepared["provider"]["worker_ips"], "workers are listed"
    node_type = prepared["available_node_types"][prepared["head_node_type"]]
    assert node_type["min_workers"] == len(config["provider"]["worker_ips"])


def test_the_head_carries_no_host_and_every_worker_offers_host_places(config):
    resource = Settings().host_resource
    heads = ray_starts(config["head_start_ray_commands"])
    workers = ray_starts(config["worker_start_ray_commands"])
    assert len(heads) == 1 and len(workers) == 1
    head, worker = heads[0], workers[0]
    assert "--head" in head
    assert option(head, "--num-cpus") == "0"
    assert resource not in json.loads(option(head, "--resources") or "{}")
    port = option(head, "--port")
    assert option(worker, "--address") == f"$RAY_HEAD_IP:{port}", "workers join the head"
    offered = json.loads(option(worker, "--resources") or "{}")
    assert offered.get(resource, 0) >= 1, f"workers offer {resource}"


def test_the_project_is_installed_on_every_node(config):
    setup = " ; ".join(config["setup_commands"])
    assert "pip install" in setup and "~/slotengine" in setup
    assert config["file_mounts"]["~/slotengine"] == "."
