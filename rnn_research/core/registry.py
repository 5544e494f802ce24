"""A name -> object registry whose lookups fail with the list of valid choices."""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
  """Maps names to objects (cells, activations, initialisers, ...).

  `REGISTRY.get(name)` raises `ValueError` naming the kind of thing looked up
  and every valid choice, so a typo in a config is one clear message.
  """

  def __init__(self, kind: str):
    self.kind = kind
    self._entries: dict[str, T] = {}

  def register(self, name: str) -> Callable[[T], T]:
    """Decorator: `@CELLS.register("gru")` adds the decorated object."""

    def add(obj: T) -> T:
      if name in self._entries:
        raise ValueError(f"{self.kind} {name!r} is registered twice")
      self._entries[name] = obj
      return obj

    return add

  def get(self, name: str) -> T:
    if name not in self._entries:
      raise ValueError(
          f"unknown {self.kind} {name!r}; valid choices: {', '.join(self.names())}")
    return self._entries[name]

  def names(self) -> list[str]:
    return sorted(self._entries)

  def __contains__(self, name: object) -> bool:
    return name in self._entries

  def __iter__(self) -> Iterator[str]:
    return iter(self.names())
