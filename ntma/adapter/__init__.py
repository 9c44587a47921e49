"""The NTMobile adapter (NTMA): an NTM node whose application side is a GN on an Ethernet link."""
