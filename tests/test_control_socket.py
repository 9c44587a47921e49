"""The control socket: its protocol as a table of inputs, and the server on a real AF_UNIX
socket, with the hostile local clients it must survive (junk, huge requests, silent
clients, too many at once), stale and live socket files, and `ntma status`'s errors."""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path

import pytest
import trio

from ntma.cli import main
from ntma.config import LogConfig, NodeConfig
from ntma.config_write import write_config
from ntma.control import open_control_socket
from ntma.control.client import NotRunning, ask_status
from ntma.control.protocol import (
    REQUEST_MAX,
    RequestError,
    RequestReader,
    decode_response,
    encode_error,
    encode_request,
    encode_status,
)
from ntma.control.server import (
    CLIENT_TIMEOUT_S,
    CLIENTS_MAX,
    ControlSocketError,
    bind_control_socket,
    run_control_server,
)
from ntma.observe.spans import StageStats
from ntma.proto.crypto import StaticKey, write_key_file

# --- the protocol --------------------------------------------------------------------------

BAD_REQUESTS = [
    (b"\n", "not_json"),
    (b"hello\n", "not_json"),
    (b"\xff\xfe\n", "not_json"),
    (b"[1, 2]\n", "not_json"),
    (b"[" * 900 + b"\n", "not_json"),  # nesting deep enough for a RecursionError
    (b'{"get": "status"}\n', "bad_version"),
    (b'{"v": 2, "get": "status"}\n', "bad_version"),
    (b'{"v": 1, "get": "shutdown"}\n', "unknown_command"),
    (b'{"v": 1}\n', "unknown_command"),
    (b"x" * REQUEST_MAX, "request_too_long"),
    (b" " * REQUEST_MAX + b"\n", "request_too_long"),
]


@pytest.mark.parametrize(("data", "reason"), BAD_REQUESTS)
def test_bad_requests_are_refused_by_reason(data: bytes, reason: str) -> None:
    with pytest.raises(RequestError) as caught:
        RequestReader().feed(data)
    assert caught.value.reason == reason


def test_a_request_fed_one_byte_at_a_time() -> None:
    reader = RequestReader()
    data = encode_request("status")
    results = [reader.feed(data[i : i + 1]) for i in range(len(data))]
    assert results[:-1] == [None] * (len(data) - 1)
    assert results[-1] is not None and results[-1].command == "status"


def test_responses_both_ways() -> None:
    assert decode_response(encode_status({"role": "dc"})) == {"role": "dc"}
    with pytest.raises(RequestError, match="busy"):
        decode_response(encode_error("busy"))
    for junk in (b"", b"{", b"[]", b'{"v": 1, "ok": true}', b'{"v": 9, "ok": true}'):
        with pytest.raises(RequestError):
            decode_response(junk)


# --- the socket file -----------------------------------------------------------------------


def test_the_socket_is_0600_and_removed_on_close(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "node.sock"
    listener = bind_control_socket(path)
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
    listener.close()
    assert not path.exists()


def test_a_stale_socket_file_is_replaced_and_a_live_one_refused(tmp_path: Path) -> None:
    path = tmp_path / "dc.sock"
    crashed = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    crashed.bind(str(path))  # a daemon that died without removing its file
    crashed.close()
    listener = bind_control_socket(path)
    try:
        with pytest.raises(ControlSocketError, match="in use by a running daemon"):
            bind_control_socket(path)
        assert stat.S_ISSOCK(os.lstat(path).st_mode)  # the live one is untouched
    finally:
        listener.close()


def test_a_file_that_is_not_a_socket_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "node.sock"
    path.write_text("precious")
    with pytest.raises(ControlSocketError, match="not a socket"):
        bind_control_socket(path)
    assert path.read_text() == "precious"


def test_the_daemons_error_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "x.sock"
    path.write_text("")
    with pytest.raises(Exception, match=r"config key 'relay.control_socket': .*not a socket"):
        open_control_socket(path, "relay")
    assert open_control_socket(None, "relay") is None


def test_closing_leaves_a_newer_daemons_socket(tmp_path: Path) -> None:
    path = tmp_path / "n.sock"
    old = bind_control_socket(path)
    os.unlink(path)
    newer = bind_control_socket(path)
    old.close()
    assert path.exists()
    newer.close()
    assert not path.exists()


# --- the server ----------------------------------------------------------------------------


async def _connect(path: Path) -> trio.SocketStream:
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.connect(str(path))
    return trio.SocketStream(sock)


async def _read_all(stream: trio.SocketStream) -> bytes:
    data = b""
    while chunk := await stream.receive_some(65536):
        data += chunk
    return data


async def _ask(path: Path, request: bytes) -> bytes:
    stream = await _connect(path)
    async with stream:
        await stream.send_all(request)
        return await _read_all(stream)


async def _serving(nursery: trio.Nursery, path: Path, stats: StageStats, snapshot=None):
    listener = bind_control_socket(path)
    calls: list[int] = []

    def status() -> dict:
        calls.append(1)
        return {"role": "node", "asked": len(calls)}

    await nursery.start(run_control_server, listener, snapshot or status, stats)
    return listener


async def test_status_is_answered_and_junk_gets_an_error_then_status_again(tmp_path) -> None:
    path, stats = tmp_path / "c.sock", StageStats("control")
    async with trio.open_nursery() as nursery:
        listener = await _serving(nursery, path, stats)
        assert decode_response(await _ask(path, encode_request())) == {"role": "node", "asked": 1}
        for junk, reason in BAD_REQUESTS:
            try:
                answer = json.loads(await _ask(path, junk))
            except trio.BrokenResourceError:  # closed with our surplus unread: a reset
                assert reason == "request_too_long"
                continue
            assert answer["ok"] is False and answer["v"] == 1
        assert decode_response(await _ask(path, encode_request()))["asked"] == 2
        nursery.cancel_scope.cancel()
    listener.close()
    assert stats.counters["status_answered"] == 2
    assert sum(stats.drops.values()) == len(BAD_REQUESTS)


async def test_silent_and_surplus_clients_block_nobody(tmp_path, autojump_clock) -> None:
    """Slowloris: CLIENTS_MAX clients connect and say nothing; one more is closed at once;
    after CLIENT_TIMEOUT_S the silent ones are cut off and a new client is answered."""
    path, stats = tmp_path / "c.sock", StageStats("control")
    async with trio.open_nursery() as nursery:
        listener = await _serving(nursery, path, stats)
        silent = [await _connect(path) for _ in range(CLIENTS_MAX)]
        await silent[0].send_all(b'{"v": 1, "get": "sta')  # half a request, then nothing
        await trio.sleep(0.1)  # each is accepted and holds a slot
        surplus = await _connect(path)
        assert await _read_all(surplus) == b""  # closed without an answer
        await trio.sleep(CLIENT_TIMEOUT_S + 0.5)
        for stream in silent:
            assert await _read_all(stream) == b""
        assert decode_response(await _ask(path, encode_request()))["role"] == "node"
        nursery.cancel_scope.cancel()
    listener.close()
    assert stats.drops["too_many_clients"] >= 1
    assert stats.drops["client_timeout"] == CLIENTS_MAX


async def test_a_failing_snapshot_is_an_error_answer_not_a_dead_daemon(tmp_path) -> None:
    path, stats = tmp_path / "c.sock", StageStats("control")

    def broken() -> dict:
        raise KeyError("a bug")

    async with trio.open_nursery() as nursery:
        listener = await _serving(nursery, path, stats, broken)
        for _ in range(2):
            answer = json.loads(await _ask(path, encode_request()))
            assert answer["ok"] is False and "log" in answer["error"]
        nursery.cancel_scope.cancel()
    listener.close()
    assert stats.drops["snapshot_failed"] == 2


async def test_a_client_that_leaves_at_once_is_counted(tmp_path) -> None:
    path, stats = tmp_path / "c.sock", StageStats("control")
    async with trio.open_nursery() as nursery:
        listener = await _serving(nursery, path, stats)
        stream = await _connect(path)
        await stream.aclose()
        assert decode_response(await _ask(path, encode_request()))["asked"] == 1
        nursery.cancel_scope.cancel()
    listener.close()
    assert stats.drops["closed_before_request"] == 1


# --- ntma status's errors ------------------------------------------------------------------


def _node_config(tmp_path: Path, control_socket: Path | None) -> Path:
    key = StaticKey.generate()
    key_file = tmp_path / "mn.key"
    write_key_file(key_file, key)
    config = NodeConfig(
        fqdn="mn.ntm.example",
        key=key,
        listen=("0.0.0.0", 7401),
        tun_name="ntm0",
        mtu=1400,
        dc_address=("198.51.100.10", 7400),
        dc_public_key=StaticKey.generate().public,
        dns_listen=("127.0.0.1", 53),
        dns_upstream=None,
        log=LogConfig(),
        control_socket=control_socket,
    )
    path = tmp_path / "mn.toml"
    write_config(path, config, key_file)
    return path


def test_status_when_the_daemon_is_not_running(tmp_path, capsys) -> None:
    sock = tmp_path / "mn.sock"
    config = _node_config(tmp_path, sock)
    assert main(["status", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"the node is not running (nothing listens on {sock})" in err
    crashed = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    crashed.bind(str(sock))  # a stale file: connection refused
    crashed.close()
    assert main(["status", "--config", str(config), "--json"]) == 2
    assert "is not running" in capsys.readouterr().err
    with pytest.raises(NotRunning):
        ask_status(sock)


def test_status_with_no_socket_configured_or_a_bad_config(tmp_path, capsys) -> None:
    config = _node_config(tmp_path, None)
    assert main(["status", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "config key 'node.control_socket': not set" in err and err.count("\n") == 1
    config.write_text(config.read_text().replace("mtu = 1400", "mtu = 9000"))
    assert main(["status", "--config", str(config)]) == 2
    assert "config key 'node.mtu'" in capsys.readouterr().err
    assert main(["status", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "no such file" in capsys.readouterr().err
    long_path = tmp_path / ("x" * 120) / "n.sock"
    config.write_text(
        config.read_text()
        .replace("mtu = 9000", "mtu = 1400")
        .replace("[node]\n", f'[node]\ncontrol_socket = "{long_path}"\n')
    )
    assert main(["status", "--config", str(config)]) == 2
    assert "too long for a Unix socket" in capsys.readouterr().err


async def test_status_from_the_cli_against_a_serving_daemon(tmp_path, capsys) -> None:
    sock = tmp_path / "mn.sock"
    config = _node_config(tmp_path, sock)
    snapshot = {
        "role": "node",
        "fqdn": "mn.ntm.example",
        "registration": {"state": "registering", "vip": None, "vip6": None},
        "dc": {"address": "198.51.100.10:7400", "last_ack_s_ago": None, "keepalives_lost": 0},
        "tunnels": [],
    }
    snapshot["registration"] |= {"observed": None, "nat": None}
    async with trio.open_nursery() as nursery:
        listener = await _serving(nursery, sock, StageStats("control"), lambda: snapshot)
        capsys.readouterr()  # the server's log line
        code = await trio.to_thread.run_sync(main, ["status", "--config", str(config), "--json"])
        as_json = capsys.readouterr().out
        table_code = await trio.to_thread.run_sync(main, ["status", "--config", str(config)])
        table = capsys.readouterr().out
        nursery.cancel_scope.cancel()
    listener.close()
    assert code == 0 and json.loads(as_json) == snapshot
    assert table_code == 0 and table.startswith("node: mn.ntm.example\n  state: registering\n")
