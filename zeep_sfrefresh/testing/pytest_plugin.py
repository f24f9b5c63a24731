"""Pytest fixtures for the stand-in Salesforce org.

Enable with ``pytest_plugins = ["zeep_sfrefresh.testing.pytest_plugin"]`` in a conftest.py.
This is the only module of the package that imports pytest.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from zeep_sfrefresh.testing.insecure import allow_insecure_transport
from zeep_sfrefresh.testing.org import StandInOrg

__all__ = ["sf_org"]


@pytest.fixture
def sf_org() -> Iterator[StandInOrg]:
    """A started :class:`StandInOrg`, stopped after the test.

    ``OAUTHLIB_INSECURE_TRANSPORT`` is set for the test's duration (the org serves plain http)
    and restored afterwards.
    """
    with allow_insecure_transport(), StandInOrg() as org:
        yield org
