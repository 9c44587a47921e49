"""In-process fuzz harness: every decoder and machine of ntma fed mutated valid inputs.

registry.py  Target and the registry (name -> a function taking bytes)
catalog.py   every target (importing it registers them)
engine.py    the seeded mutation engine
world.py     a deterministic v2 network (DC, RS, two nodes) whose run the seeds capture
             and whose machines the machine targets replay
seeds.py     valid inputs built with the project's own builders, plus real captures
codecs.py    targets for the pure codecs of ntma/proto (protocol v2, DNS, DHCP, GN link)
machines.py  targets for the receive() of the DC, the node and the RS
runner.py    runs targets and collects distinct crashes and the slowest input
blast.py     python -m ntma.fuzz.blast: a bounded burst at one address or interface
             (the lab's hostile-input test, tests/test_e2e_hostile.py)
__main__.py  python -m ntma.fuzz [--target NAME ...] [--inputs N] [--seed S] [--seconds T]
"""
