"""Fakes shared by the tests: one definition each, so that tests of different modules do not
keep copies that drift."""

from __future__ import annotations


class FakeClock:
    """A clock that stands still until a test moves it (clock.now += 30): code that takes a
    clock callable sees time pass exactly as the test says, without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now
