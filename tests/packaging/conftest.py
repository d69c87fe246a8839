"""tests/packaging: the 'packaging' marker, and a report of the time each step took."""

import pytest


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "packaging: builds the .deb and .rpm and installs/purges the .deb (root)")
    config._vmceph_step_times = {}


@pytest.fixture(scope="session")
def step_times(pytestconfig):
    """step name -> seconds; printed at the end of the run."""
    return pytestconfig._vmceph_step_times


def pytest_terminal_summary(terminalreporter, config):
    times = getattr(config, "_vmceph_step_times", None)
    if times:
        terminalreporter.section("packaging step times")
        for step, seconds in times.items():
            terminalreporter.write_line("%-40s %7.1f s" % (step, seconds))
