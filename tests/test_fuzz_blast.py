"""`python -m ntma.fuzz.blast` without sending anything: its inputs, bounds and arguments
(the lab test `test_e2e_hostile.py` sends with it)."""

from __future__ import annotations

import argparse
import itertools

import pytest

from ntma.fuzz import blast
from ntma.proto import dns
from ntma.proto.buffer import CodecError


def _args(*argv: str) -> argparse.Namespace:
    ns = argparse.Namespace(replay=None, mutate=None, corpus="signalling", seed=0)
    for key, value in zip(argv[::2], argv[1::2], strict=True):
        setattr(ns, key, value)
    return ns


def _first(args: argparse.Namespace, n: int) -> list[bytes]:
    return list(itertools.islice(blast.inputs(args), n))


@pytest.mark.parametrize("name", sorted(blast.CORPORA))
def test_every_corpus_gives_reproducible_inputs(name):
    args = _args("corpus", name, "seed", 5)
    first = _first(args, 50)
    assert len(first) == 50 and first == _first(args, 50)
    assert first != _first(_args("corpus", name, "seed", 6), 50)
    if name != "random":
        assert blast.corpus(name)[1], f"no seeds for {name}"


def test_dns_starts_with_the_edge_cases_and_the_codec_refuses_the_bad_ones():
    verbatim, _ = blast.corpus("dns")
    edge = blast.dns_edge_cases()
    assert _first(_args("corpus", "dns"), len(verbatim)) == verbatim
    assert set(edge) <= set(verbatim)
    refused = 0
    for query in edge:
        try:
            dns.parse_query(query)
        except CodecError:
            refused += 1
    assert refused >= 10  # 64-byte labels, pointer loops, lying counts, short headers


def test_replay_and_mutate_read_hex_lines(tmp_path):
    path = tmp_path / "x.hex"
    path.write_text("00ff\nabcdef\n")
    assert _first(_args("replay", str(path)), 5) == [b"\x00\xff", b"\xab\xcd\xef"]
    mutated = _first(_args("mutate", str(path)), 20)
    assert len(mutated) == 20


@pytest.mark.parametrize(
    "argv",
    [
        [],  # no destination
        ["--to", "198.51.100.10"],  # no port
        ["--to", "198.51.100.10:7400", "--count", "0"],
        ["--to", "198.51.100.10:7400", "--count", str(blast.MAX_COUNT + 1)],
        ["--to", "198.51.100.10:7400", "--seconds", "3600"],
        ["--iface", "eth0", "--tcp"],
        ["--to", "198.51.100.10:7400", "--replay", "a", "--mutate", "b"],
    ],
)
def test_unbounded_or_unaimed_runs_are_refused(argv):
    with pytest.raises(SystemExit) as exc:
        blast.main(argv)
    assert exc.value.code == 2


def test_pacer_stops_at_the_count():
    pacer = blast.Pacer(count=3, seconds=5, rate=1e9)
    sent = 0
    while pacer.more():
        pacer.sent += 1
        sent += 1
    assert sent == 3
