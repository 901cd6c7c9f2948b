"""Reading one channel's configuration (an Alertmanager ``*_configs`` entry) strictly.

A :class:`Section` hands out typed values and remembers what it read; ``finish()`` then
refuses any key nobody asked for, so a typo (``smarthots``) or an Alertmanager field we
do not support stops start-up instead of being ignored. Every error is a
:class:`ChannelConfigError` naming the receiver, the config list and index, and the field.

Go templates (``{{ ... }}``) are not supported anywhere: a value copied from an
Alertmanager configuration that still holds one is refused, rather than sent literally.
"""

from __future__ import annotations

import difflib
import re
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["ChannelConfigError", "Section", "parse_duration"]


class ChannelConfigError(ValueError):
    """A receiver's channel configuration is invalid.

    ``receiver`` is the receiver's name, ``config`` the list (``email_configs``) or ""
    for the receiver itself, ``index`` the entry in that list (None for the receiver or
    the list as a whole) and ``field`` the dotted field (``tls_config.ca_file``).
    """

    def __init__(self, receiver: str, config: str, index: int | None, field: str,
                 reason: str) -> None:
        self.receiver = receiver
        self.config = config
        self.index = index
        self.field = field
        self.reason = reason
        where = config if index is None else f"{config}[{index}]"
        path = ".".join(part for part in (where, field) if part)
        super().__init__(f"receiver {receiver!r}: {path}: {reason}")


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Prometheus-style ``"10s"``, ``"1m30s"``, ``"500ms"`` in seconds; ValueError else."""
    if not text or _DURATION.sub("", text):
        raise ValueError(text)
    return sum(float(number) * _DURATION_UNITS[unit]
               for number, unit in _DURATION.findall(text))


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


class Section:
    """One mapping of the configuration, read field by field."""

    def __init__(self, data: object, *, receiver: str, config: str, index: int | None,
                 prefix: str = "") -> None:
        self.receiver = receiver
        self.config = config
        self.index = index
        self.prefix = prefix
        self._read: set[str] = set()
        if not isinstance(data, Mapping):
            raise self._error("", f"expected a mapping, got {_kind(data)}")
        self._data: Mapping[str, Any] = data

    def _error(self, field: str, reason: str) -> ChannelConfigError:
        path = ".".join(part for part in (self.prefix, field) if part)
        return ChannelConfigError(self.receiver, self.config, self.index, path, reason)

    def error(self, field: str, reason: str) -> ChannelConfigError:
        """An error about ``field`` of this section, to raise."""
        return self._error(field, reason)

    def has(self, key: str) -> bool:
        return self._data.get(key) is not None

    def raw(self, key: str) -> object:
        """The value of ``key`` as given (None when absent), marked read."""
        self._read.add(key)
        return self._data.get(key)

    def string(self, key: str, default: str = "", *, required: bool = False,
               template_free: bool = True) -> str:
        """A string (``default`` when absent or null; an error when ``required``)."""
        value = self.raw(key)
        if value is None:
            if required:
                raise self._error(key, "is required")
            return default
        if not isinstance(value, str):
            raise self._error(key, f"expected a string, got {_kind(value)}")
        if required and not value.strip():
            raise self._error(key, "must not be empty")
        if template_free and "{{" in value:
            raise self._error(key, "Go templates are not supported; give the value itself")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self._error(key, f"expected true or false, got {_kind(value)}")
        return value

    def integer(self, key: str, default: int, *, minimum: int = 0) -> int:
        value = self.raw(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._error(key, f"expected an integer, got {_kind(value)}")
        if value < minimum:
            raise self._error(key, f"must be at least {minimum}, got {value}")
        return value

    def duration(self, key: str, default: float) -> float:
        """A Prometheus duration string (``"10s"``) in seconds, more than zero."""
        text = self.string(key)
        if not text:
            return default
        try:
            seconds = parse_duration(text)
        except ValueError:
            raise self._error(key, f'expected a duration like "10s", got {text!r}') from None
        if seconds <= 0:
            raise self._error(key, "must be more than zero")
        return seconds

    def choice(self, key: str, choices: tuple[str, ...], default: str = "") -> str:
        value = self.string(key, default)
        if value and value not in choices:
            raise self._error(key, f"expected one of {', '.join(choices)}, got {value!r}")
        return value

    def url(self, key: str, default: str = "", *, required: bool = False) -> str:
        value = self.string(key, default, required=required)
        if value:
            self.check_url(key, value)
        return value

    def check_url(self, key: str, value: str) -> None:
        """Refuse ``value`` (of ``key``) unless it is an http(s) URL (not echoed: URLs
        may hold tokens)."""
        if not re.match(r"https?://[^/\s]+\S*$", value):
            raise self._error(key, "expected an http:// or https:// URL")

    def string_map(self, key: str) -> dict[str, str]:
        """A mapping of strings to strings (``headers``, ``details``)."""
        value = self.raw(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self._error(key, f"expected a mapping, got {_kind(value)}")
        out: dict[str, str] = {}
        for name, item in value.items():
            if not isinstance(name, str) or not isinstance(item, str):
                raise self._error(f"{key}.{name}", f"expected a string, got {_kind(item)}")
            if "{{" in item:
                raise self._error(f"{key}.{name}",
                                  "Go templates are not supported; give the value itself")
            out[name] = item
        return out

    def section(self, key: str) -> Section | None:
        """A nested mapping, read as its own section (None when absent)."""
        value = self.raw(key)
        if value is None:
            return None
        prefix = ".".join(part for part in (self.prefix, key) if part)
        return Section(value, receiver=self.receiver, config=self.config, index=self.index,
                       prefix=prefix)

    def sections(self, key: str) -> list[Section]:
        """A list of mappings (``links``, ``images``)."""
        value = self.raw(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self._error(key, f"expected a list, got {_kind(value)}")
        prefix = ".".join(part for part in (self.prefix, key) if part)
        return [Section(item, receiver=self.receiver, config=self.config, index=self.index,
                        prefix=f"{prefix}[{i}]") for i, item in enumerate(value)]

    def secret(self, key: str, file_key: str) -> str:
        """A secret given inline (``key``) or in a file (``file_key``; read once, now,
        surrounding whitespace stripped as Prometheus does); "" when neither is set."""
        inline = self.string(key, template_free=False)
        path = self.string(file_key)
        if inline and path:
            raise self._error(file_key, f"set only one of {key} and {file_key}")
        if not path:
            return inline
        try:
            text = Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as err:
            raise self._error(file_key, f"cannot read {path!r}: {err}") from None
        if not text:
            raise self._error(file_key, f"{path!r} is empty")
        return text

    def forbid(self, key: str, reason: str) -> None:
        """Refuse ``key`` (an Alertmanager field we do not support) with ``reason``."""
        if self.has(key):
            raise self._error(key, reason)
        self._read.add(key)

    def finish(self) -> None:
        """Refuse any key that was not read."""
        unknown = sorted(str(key) for key in self._data if key not in self._read)
        if unknown:
            near = difflib.get_close_matches(unknown[0], sorted(self._read), n=1)
            hint = f" (did you mean {near[0]}?)" if near else ""
            raise self._error(unknown[0], f"unknown field{hint}")


def tls_context(section: Section | None) -> ssl.SSLContext | None:
    """An SSL context from a ``tls_config`` section (ca_file, cert_file, key_file,
    insecure_skip_verify); None when the section is absent (system defaults)."""
    if section is None:
        return None
    ca_file = section.string("ca_file")
    cert_file = section.string("cert_file")
    key_file = section.string("key_file")
    insecure = section.boolean("insecure_skip_verify", False)
    section.finish()
    if bool(cert_file) != bool(key_file):
        raise section.error("key_file" if cert_file else "cert_file",
                            "cert_file and key_file go together")
    try:
        context = ssl.create_default_context(cafile=ca_file or None)
    except (OSError, ssl.SSLError) as err:
        raise section.error("ca_file", f"cannot load {ca_file!r}: {err}") from None
    if cert_file:
        try:
            context.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as err:
            raise section.error("cert_file", f"cannot load {cert_file!r}: {err}") from None
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
