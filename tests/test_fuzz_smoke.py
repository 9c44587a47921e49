"""A seeded smoke of the fuzz harness (ntma/fuzz): every codec target, tens of thousands of
mutated inputs each, no crash. The long campaign is scripts/fuzz.sh.

The machine targets (dc.*, node.*, rs.*) are slower per input (they seal, open and keep
state), so they get fewer inputs each, in their own test.
"""

from __future__ import annotations

import pytest

from ntma.fuzz.__main__ import main
from ntma.fuzz.catalog import all_targets, smoke_targets
from ntma.fuzz.engine import Mutator
from ntma.fuzz.registry import Target, check
from ntma.fuzz.runner import format_crashes, run_target
from ntma.proto.buffer import CodecError
from ntma.proto.messages import MESSAGE_TYPES

SMOKE_INPUTS = 60_000
MACHINE_SMOKE_INPUTS = 10_000
SMOKE_SEED = 20_260_101
MACHINES = ("dc.receive", "dc.sealed", "node.receive", "node.sealed", "rs.receive", "rs.sealed")


@pytest.mark.parametrize("name", sorted(smoke_targets()))
def test_smoke(name):
    result = run_target(smoke_targets()[name], inputs=SMOKE_INPUTS, seed=SMOKE_SEED)
    assert result.inputs == SMOKE_INPUTS
    assert not result.crashes, format_crashes([result])


@pytest.mark.parametrize("name", MACHINES)
def test_machine_smoke(name):
    result = run_target(all_targets()[name], inputs=MACHINE_SMOKE_INPUTS, seed=SMOKE_SEED)
    assert result.inputs == MACHINE_SMOKE_INPUTS
    assert not result.crashes, format_crashes([result])


def test_every_decoder_and_machine_has_a_target():
    names = set(all_targets())
    assert {f"messages.{t.name.lower()}" for t in MESSAGE_TYPES} <= names
    for wanted in (
        "buffer.reader",
        "packet.open_message",
        "packet.peek_sender",
        "packet.unwrap_envelope",
        "packet.unpack_data_header",
        "packet.relayed_tunnel_id",
        "grant.check_grant",
        "dns.parse_query",
        "dns.replies",
        "dhcp.parse",
        "dhcp.server",
        "gnlink.classify_frame",
        "gnlink.answer_arp",
        "ether.parsers",
        "ether.clamp_mss",
        "dc.receive",
        "dc.sealed",
        "node.receive",
        "node.sealed",
        "rs.receive",
        "rs.sealed",
    ):
        assert wanted in names
    machines = {n for n in names if n.split(".")[0] in ("dc", "node", "rs")}
    assert machines and not machines & set(smoke_targets())


def test_every_target_has_seeds_and_none_crashes_on_them():
    for target in smoke_targets().values():
        seeds = target.seeds()
        assert seeds, target.name
        result = run_target(target, inputs=len(seeds))
        assert not result.crashes, format_crashes([result])


def test_mutator_is_reproducible_and_mutates():
    seeds = [bytes(range(40)), b"\x00\x05hello"]
    a, b = Mutator(seeds, 7), Mutator(seeds, 7)
    first = [a.next_input() for _ in range(500)]
    assert first == [b.next_input() for _ in range(500)]
    assert first != [Mutator(seeds, 8).next_input() for _ in range(500)]
    assert len(set(first)) > 400 and not set(first) <= set(seeds)


def _broken(data: bytes) -> None:
    if data[:1] == b"\x01":
        raise KeyError("boom")
    if data[:1] == b"\x02":
        check(False, "property")
    if data[:1] == b"\x03":
        raise CodecError("declared rejection")


def test_runner_groups_crashes_and_ignores_declared_rejections():
    target = Target("test.broken", _broken, lambda: [b"\x01", b"\x02", b"\x03", b"\x04"])
    result = run_target(target, inputs=4)
    assert sorted(kind for kind, _ in result.crashes) == ["KeyError", "PropertyFailure"]
    assert {c.first_input for c in result.crashes.values()} == {b"\x01", b"\x02"}
    assert "--repro test.broken 01" in format_crashes([result])


def test_cli_table_and_repro(capsys):
    assert main(["--target", "packet.peek", "--inputs", "200", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == [
        "target",
        "inputs",
        "crashes",
        "slowest",
        "µs",
        "inputs/s",
    ]
    assert "packet.peek_sender" in out and " 200 " in out
    assert main(["--repro", "dns.parse_query", "00"]) == 0
    assert main(["--list"]) == 0


class _Armed:
    """A stateful fake target: b"go" crashes only after b"arm" (noise in between)."""

    def __init__(self) -> None:
        self.history: list[bytes] = []
        self.armed = False

    def run(self, data: bytes) -> None:
        self.history.append(data)
        if data == b"arm":
            self.armed = True
        elif data == b"go" and self.armed:
            exc = RuntimeError("went off")
            exc.fuzz_history = tuple(self.history[:-1])  # as machines._guarded does
            raise exc

    def reset(self) -> None:
        self.history, self.armed = [], False


def test_a_stateful_crash_is_reported_with_the_inputs_it_needs():
    armed = _Armed()
    target = Target("test.armed", armed.run, lambda: [b"x", b"arm", b"y", b"go"], reset=armed.reset)
    result = run_target(target, inputs=4)
    (crash,) = result.crashes.values()
    assert crash.before == (b"arm",) and crash.first_input == b"go"
    assert "--repro test.armed 61726d 676f" in format_crashes([result])
