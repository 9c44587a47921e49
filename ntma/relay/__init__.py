"""Relay Server: relays tunnels the DC has granted, and nothing else."""
