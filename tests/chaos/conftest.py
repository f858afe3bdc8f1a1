"""The chaos suite's figures (faults injected, rollouts ended, violations, takeover time), printed
at the end of the session whatever pytest captured."""

from __future__ import annotations

import pytest

from tests.chaos.fleet import FIGURES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("chaos figures")
        for line in FIGURES:
            terminalreporter.write_line(line)
