"""In-process fixtures the tests and the benchmarks share (no kernel, no namespaces).

traffic: packets and frames built with the project's own codecs. tunnels: both ends of
a tunnel with mirrored keys. world: a DC and NTM nodes on a fake network. adapter_world:
the adapter's whole pipeline with a fake GN link and passthrough TUN beside a DC and a
peer node. Nothing here imports ntma.bench, so bench and tests both build on it.
"""
