"""Test helpers shipped with zeep-sfrefresh: a stand-in Salesforce org on loopback.

:class:`StandInOrg` is a real HTTP server (OAuth token endpoint, SOAP APIs, a little REST)
that lets tests expire sessions on demand and watch a client refresh them, without a real
org or network access. Pytest users can enable the ``sf_org`` fixture with
``pytest_plugins = ["zeep_sfrefresh.testing.pytest_plugin"]``. Nothing here imports pytest.
"""

from __future__ import annotations

from zeep_sfrefresh.testing.insecure import allow_insecure_transport
from zeep_sfrefresh.testing.org import StandInOrg

__all__ = ["StandInOrg", "allow_insecure_transport"]
