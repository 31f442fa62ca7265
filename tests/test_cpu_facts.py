"""The suite states which CPU it ran on: the features that change numerics are in the pytest header and in reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgekit.benchmark.facts import NUMERIC_CPU_FLAGS, machine_facts, numeric_cpu_flags


def _cpuinfo_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.lower().startswith(("flags", "features")):
            return set(line.split(":", 1)[1].split())
    return set()


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="needs /proc/cpuinfo (Linux)")
def test_numeric_flags_are_exactly_those_this_cpu_has() -> None:
    present = _cpuinfo_flags()
    assert numeric_cpu_flags() == [flag for flag in NUMERIC_CPU_FLAGS if flag in present]
    assert machine_facts()["cpu_flags"] == numeric_cpu_flags()


def test_pytest_header_names_the_cpu_and_its_numeric_flags(request: pytest.FixtureRequest) -> None:
    config = request.config
    lines = [line for lines in config.hook.pytest_report_header(config=config, start_path=config.rootpath)
             for line in ([lines] if isinstance(lines, str) else lines)]  # fmt: skip
    header = next(line for line in lines if line.startswith("cpu: "))
    assert "numerics flags:" in header
    assert all(flag in header.split("numerics flags:", 1)[1].split() for flag in numeric_cpu_flags())
