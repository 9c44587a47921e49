"""Typed access to a TOML config's tables, collecting every problem (ntma.config's base).

`_Doc` is one file being loaded: `section()` hands out `_Section`s, each rule raises a
ConfigError where it is written, and `take()` records it and goes on, so a loader reports
every problem at once (`ConfigErrors`). Each `_Section` remembers the keys it was asked for:
any other key in the file is a typo, reported with the closest key that was asked for.
"""

from __future__ import annotations

import difflib
import ipaddress
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .proto.buffer import Endpoint
from .proto.crypto import KeyError_, StaticKey, decode_key, load_key_file


class ConfigError(Exception):
    def __init__(self, key: str, problem: str, fix: str) -> None:
        super().__init__(f"config key '{key}': {problem}; {fix}")
        self.key = key


class ConfigErrors(ConfigError):
    """Every problem a loader found, in file order; str() is one line per problem."""

    def __init__(self, problems: list[ConfigError]) -> None:
        Exception.__init__(self, "\n".join(str(p) for p in problems))
        self.key, self.problems = problems[0].key, problems


class _Absent(ConfigError):
    """A key of a table that is missing altogether: that table was reported, not each key."""


class _Section:
    """Typed access to one TOML table, with the dotted key for error messages."""

    def __init__(self, data: dict[str, Any], name: str, base: Path, absent: bool = False) -> None:
        self.data, self.name, self.base, self.absent = data, name, base, absent
        self.used: set[str] = set()  # every key a loader asked for: the rest are typos

    def _key(self, key: str) -> str:
        return f"{self.name}.{key}"

    def get(self, key: str, kind: type, default: Any = ..., fix: str = "") -> Any:
        self.used.add(key)
        if key not in self.data:
            if default is ... and self.absent:
                raise _Absent(self._key(key), "", "")
            if default is ...:
                raise ConfigError(self._key(key), "missing", fix or f"add {key} to [{self.name}]")
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(
                self._key(key),
                f"expected {kind.__name__}, got {value!r}",
                fix or f"set {key} to a {kind.__name__}",
            )
        return value

    def endpoint(self, key: str, default: Any = ..., default_port: int | None = None) -> Any:
        text = self.get(key, str, default, fix=f'set {key} = "ADDRESS:PORT"')
        return None if text is None else parse_endpoint(text, self._key(key), default_port)

    def positive(self, key: str, kind: type, default: Any = ...) -> Any:
        value = self.get(key, kind, default)
        if not value > 0 or value == float("inf"):  # also refuses nan and inf
            raise ConfigError(
                self._key(key), f"must be positive, got {value}", f"set {key} to a number above 0"
            )
        return value

    def path(self, key: str, default: Any = ...) -> Any:
        text = self.get(key, str, default, fix=f'set {key} = "PATH"')
        if text is None:
            return None
        path = Path(text)
        return path if path.is_absolute() else self.base / path

    def state_path(self, key: str, default: Any = ...) -> Any:
        """A file the daemon writes (a database, a socket): its directory must exist."""
        path = self.path(key, default)
        if path is not None and not path.parent.is_dir():
            raise ConfigError(
                self._key(key),
                f"no directory {path.parent}",
                f"create it (mkdir -p {path.parent}) or point {key} into one that exists",
            )
        return path

    def key_file(self, key: str) -> StaticKey:
        path = self.path(key)
        try:
            static = load_key_file(path)
            mode = path.stat().st_mode
        except FileNotFoundError:
            raise ConfigError(
                self._key(key), f"no such file {path}", "create one with 'ntma keygen --out FILE'"
            ) from None
        except (KeyError_, ValueError) as exc:
            raise ConfigError(
                self._key(key),
                f"{path} is not an ntma key file ({exc})",
                "create one with 'ntma keygen --out FILE'",
            ) from None
        except OSError as exc:
            raise ConfigError(
                self._key(key),
                f"cannot read {path} ({exc.strerror})",
                "point it at a key file made with 'ntma keygen --out FILE'",
            ) from None
        if mode & 0o007:  # a private key: its owner's (and a service group's) only
            fix = f"chmod 600 {path} (640 for a service's group)"
            raise ConfigError(self._key(key), f"{path} is readable by every user", fix)
        return static

    def public_key(self, key: str) -> bytes:
        try:
            return decode_key(self.get(key, str))
        except KeyError_ as exc:
            raise ConfigError(
                self._key(key), str(exc), "use the base64 public key printed by 'ntma keygen'"
            ) from None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def parse_endpoint(text: str, key: str, default_port: int | None = None) -> Endpoint:
    bare = text.startswith("[") and text.endswith("]")
    host, sep, port_text = text.rpartition(":")
    if bare or not sep or (sep and _is_ip(text)):  # no port given: "[::1]", "::1", "192.0.2.1"
        host, port_text = text, str(default_port) if default_port else ""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
        if not port_text.isdigit():
            raise ValueError
        port = int(port_text)
        if not 0 <= port <= 65535:
            raise ValueError
    except ValueError:
        raise ConfigError(
            key, f"{text!r} is not ADDRESS:PORT", 'write it like "198.51.100.10:7400"'
        ) from None
    return (str(address), port)


def _load(path: Path) -> tuple[dict[str, Any], Path]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f), path.resolve().parent
    except FileNotFoundError:
        raise ConfigError(
            "--config", f"no such file {path}", "pass an existing TOML file"
        ) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(
            "--config", f"{path} is not valid TOML ({exc})", "fix the syntax at the position shown"
        ) from None
    except OSError as exc:
        raise ConfigError(
            "--config", f"cannot read {path} ({exc.strerror})", "pass a readable TOML file"
        ) from None


def _unknown(key: str, known: set[str], what: str = "key") -> ConfigError:
    name = key.rpartition(".")[2]
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    if close:
        fix = f"did you mean {close[0]}?"
    else:
        fix = f"remove it (known: {', '.join(sorted(known)) or 'none'})"
    return ConfigError(key, f"unknown {what}", fix)


_FAILED = object()  # a field whose rule raised


class _Doc:
    """One config file being loaded: its tables and the problems found so far."""

    def __init__(self, data: dict[str, Any], base: Path) -> None:
        self.data, self.base = data, base
        self.problems: list[ConfigError] = []
        self.sections: list[_Section] = []  # checked for unknown keys by build()
        self.tables: set[str] = set()  # top-level names a loader asked for

    def _attempt(self, rule: Callable[[], Any]) -> Any:
        try:
            return rule()
        except _Absent:  # its table's absence is the problem, reported once
            return _FAILED
        except ConfigError as exc:
            self.problems.append(exc)
            return _FAILED

    def take(self, rule: Callable[[], Any], fallback: Any = None) -> Any:
        """rule(), or `fallback` with its problem recorded: the next rule still runs."""
        value = self._attempt(rule)
        return fallback if value is _FAILED else value

    def make(self, kind: type, **fields: Any) -> Any:
        """kind(**fields), each callable field taken under take(); None if one failed."""
        values = {name: self._attempt(v) if callable(v) else v for name, v in fields.items()}
        return None if _FAILED in values.values() else kind(**values)

    def raw(self, name: str, default: Any) -> Any:
        """A top-level value as written (an array of tables, a free-form table)."""
        self.tables.add(name)
        return self.data.get(name, default)

    def section(self, name: str, required: bool = True, free: bool = False) -> _Section:
        """Table `name`; `free`: its keys are names (admission), not checked for typos."""
        table = self.raw(name, None if required else {})
        if not isinstance(table, dict):
            problem = "missing table" if table is None else "must be a table"
            self.problems.append(ConfigError(name, problem, f"add a [{name}] table"))
            return _Section({}, name, self.base, absent=True)
        sec = _Section(table, name, self.base)
        return sec if free else self.checked(sec)

    def checked(self, sec: _Section) -> _Section:
        """`sec`, to be checked for keys no rule asked for."""
        self.sections.append(sec)
        return sec

    def unknown_keys(self) -> Iterator[ConfigError]:
        for name in self.data:
            if name not in self.tables:
                yield _unknown(name, self.tables, "table")
        for sec in self.sections:
            yield from (_unknown(sec._key(k), sec.used) for k in sec.data if k not in sec.used)

    def build(self, kind: type, **fields: Any) -> Any:
        """The whole config: make(), then unknown keys; every problem raised at once."""
        config = self.make(kind, **fields)
        self.problems += self.unknown_keys()
        if self.problems:  # two fields read from one key report its problem once
            unique = {str(p): p for p in self.problems}
            raise ConfigErrors(list(unique.values()))
        return config


@contextmanager
def loading(path: Path) -> Iterator[_Doc]:
    """The file's _Doc; a rule that raised outside take() joins the problems found so far."""
    doc = _Doc(*_load(path))  # an unreadable file is the one problem: nothing else to check
    try:
        yield doc
    except ConfigErrors:
        raise
    except ConfigError as exc:
        raise ConfigErrors([*doc.problems, exc]) from None
