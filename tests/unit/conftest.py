from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses
from aioresponses import core as aioresponses_core
from yarl import URL


class _Aiohttp314Response(aiohttp.ClientResponse):
    """aioresponses 0.7.9 predates aiohttp 3.14's required stream_writer (its issue 289)."""

    def __init__(self, method: str, url: URL, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


@pytest.fixture
def mocked(monkeypatch: pytest.MonkeyPatch) -> Iterator[aioresponses]:
    """aioresponses: the vendor HTTP boundary, the only thing unit tests mock."""
    monkeypatch.setattr(aioresponses_core, "ClientResponse", _Aiohttp314Response)
    with aioresponses() as m:
        yield m
