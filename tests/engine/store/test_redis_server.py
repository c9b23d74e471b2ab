"""The embedded Redis keeps its secret to its owner (a real server started here)."""

from __future__ import annotations

import os
import stat
import subprocess

import redis

from engine.store.embedded import EmbeddedRedis, masked_url


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_password_is_not_on_the_servers_command_line(tmp_path):
    with EmbeddedRedis(tmp_path / "r") as server:
        argv = subprocess.run(
            ["ps", "-o", "args=", "-p", str(server.process.pid)], capture_output=True, text=True
        ).stdout
        assert argv
        assert server.password not in argv
        assert redis.Redis.from_url(server.url).ping()


def test_the_data_folder_and_config_are_the_owners_only(tmp_path):
    with EmbeddedRedis(tmp_path / "r") as server:
        assert mode(server.data_dir) == 0o700
        assert mode(server.data_dir / "redis.conf") == 0o600
        assert mode(server.data_dir / "redis.log") == 0o600
        assert server.password in (server.data_dir / "redis.conf").read_text()


def test_a_client_without_the_password_is_refused(tmp_path):
    with EmbeddedRedis(tmp_path / "r") as server:
        try:
            redis.Redis(port=server.port).ping()
        except redis.AuthenticationError:
            return
        except redis.ResponseError as exc:
            assert "NOAUTH" in str(exc)
            return
        raise AssertionError("a client without the password was served")


def test_a_printed_url_shows_only_the_start_of_the_password():
    shown = masked_url("redis://:GB39abcdefRQ5@127.0.0.1:51993/0")
    assert shown == "redis://:GB***@127.0.0.1:51993/0"
    assert masked_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
