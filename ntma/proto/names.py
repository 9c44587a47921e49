"""Domain names as ntma compares them: one spelling for every table and lookup."""

from __future__ import annotations


def normalize_fqdn(name: str) -> str:
    """`Mn.NTM.example.` and `mn.ntm.example` are one name: no trailing dot, lower case."""
    return name.rstrip(".").lower()


def is_ntm_name(name: str, suffixes: list[str]) -> bool:
    """True if the (normalized) name is one of the suffixes or below one of them."""
    return any(name == s or name.endswith("." + s) for s in suffixes)
