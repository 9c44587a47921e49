"""The adapter's devices at run time: the table built from the config, the names it keeps
across restarts (a JSON file of MAC -> name), and a per-interval summary line per device."""

from __future__ import annotations

import json
import os
from pathlib import Path

import structlog
import trio

from ..config import AdapterConfig
from ..proto.devices import DeviceRule, Devices
from ..proto.ether import mac_text


def leases_path(config: AdapterConfig) -> Path | None:
    if config.leases_file is not None:
        return config.leases_file
    return None if config.key_path is None else config.key_path.with_suffix(".devices.json")


def load_leases(path: Path | None, log) -> dict[bytes, str]:
    """MAC -> name as saved; a missing or broken file is an empty table (logged)."""
    if path is None or not path.exists():
        return {}
    try:
        raw = json.loads(path.read_text())
        return {bytes.fromhex(mac.replace(":", "")): str(name) for mac, name in raw.items()}
    except (OSError, ValueError, AttributeError) as exc:
        log.warning("leases_unreadable", path=str(path), error=str(exc))
        return {}


def save_leases(path: Path | None, leases: dict[bytes, str]) -> None:
    """Written whole to a temporary file and renamed over the old one (never half a file).
    A file system that refuses (full, read-only) is logged, never raised: a device's DHCP
    must not stop the DHCP stage; the names are saved again at the next change."""
    if path is None:
        return
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps({mac_text(m): n for m, n in sorted(leases.items())}, indent=1))
        os.replace(tmp, path)
    except OSError as exc:
        structlog.get_logger().warning("leases_not_saved", path=str(path), error=str(exc))


def rules_of(config: AdapterConfig) -> tuple[DeviceRule, ...]:
    return tuple(DeviceRule(d.mac, d.fqdn, d.inbound) for d in config.devices)


def devices_from_config(config: AdapterConfig, leases: dict[bytes, str]) -> Devices:
    return Devices(
        config.fqdn,
        rules_of(config),
        default_device=config.default_device,
        host_names=config.host_names,
        inbound=config.inbound,
        max_devices=config.max_devices,
        leases=leases,
    )


async def log_device_stats(
    devices: Devices, interval: float, *, task_status=trio.TASK_STATUS_IGNORED
) -> None:
    """A `device_stats` line per device whose counters moved since the last interval."""
    log = structlog.get_logger().bind(stage="devices")
    last: dict[bytes, tuple[int, int, int]] = {}
    task_status.started()
    while True:
        await trio.sleep(interval)
        for mac, device in list(devices.by_mac.items()):
            now = (device.packets_out, device.packets_in, sum(device.drops.values()))
            if last.get(mac) != now:
                last[mac] = now
                log.info("device_stats", **device.summary())
