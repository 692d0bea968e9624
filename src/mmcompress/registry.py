"""Name → builder registries, keyed by the option names of the matching conf/ group."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from mmcompress.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A dict of builders that fails loudly (naming the valid options) on an unknown name."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = entry
            return entry

        return add

    def __getitem__(self, name: str) -> T:
        if name not in self._entries:
            raise ConfigError(
                f"unknown {self.kind} '{name}'; valid options: {', '.join(sorted(self._entries))}"
            )
        return self._entries[name]

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        return sorted(self._entries)
