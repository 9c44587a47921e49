"""The source paper's Table 2: the adapter's per-packet times, one figure per measure.

Keyed by the adapter's path span names (`stages/ethernet.py` and friends open them with
`spans.path(...)`); the demo prints them beside the adapter's own, the lab benchmark puts
them in its report.
"""

from __future__ import annotations

#: The paths measured, in the paper's order.
TABLE2_PATHS = ("arp_processing", "packet_relay", "tunnel_send", "response_relay")
#: The paper's figures (microseconds).
PAPER_TABLE_2_US = {
    "arp_processing": 246.1,
    "packet_relay": 12.0,
    "tunnel_send": 206.5,
    "response_relay": 324.0,
}
#: What each path covers, in the paper's words.
TABLE2_LABELS = {
    "arp_processing": "ARP processing (request in -> reply out)",
    "packet_relay": "packet relay (GN frame in -> handed to the tunnel)",
    "tunnel_send": "tunnel send (encapsulate + UDP send)",
    "response_relay": "response relay (tunnel packet in -> frame to the GN)",
}
