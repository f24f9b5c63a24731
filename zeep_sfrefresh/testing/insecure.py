"""Let oauthlib talk to the stand-in org, which serves plain http on loopback.

oauthlib refuses any token URL that is not https unless ``OAUTHLIB_INSECURE_TRANSPORT`` is set.
The stand-in org cannot offer https without a certificate, so tests set the variable for as
long as they talk to it. Only this testing package touches the variable: the library itself
must never relax the https check for real token URLs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["INSECURE_TRANSPORT_VARIABLE", "allow_insecure_transport"]

INSECURE_TRANSPORT_VARIABLE = "OAUTHLIB_INSECURE_TRANSPORT"


@contextmanager
def allow_insecure_transport() -> Iterator[None]:
    """Set ``OAUTHLIB_INSECURE_TRANSPORT=1`` for the block, then restore the previous value.

    The variable is process-wide: while the block runs, every thread's oauthlib accepts http
    token URLs, not only the test's. Use it around stand-in org tests only, and do not run such
    tests in parallel threads with tests that expect the https check to hold. Usable as a
    decorator too.
    """
    previous = os.environ.get(INSECURE_TRANSPORT_VARIABLE)
    os.environ[INSECURE_TRANSPORT_VARIABLE] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(INSECURE_TRANSPORT_VARIABLE, None)
        else:
            os.environ[INSECURE_TRANSPORT_VARIABLE] = previous
