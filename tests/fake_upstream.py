"""The fake upstream of the integration tests; it lives in `tollgate_core.fake_upstream`."""

from tollgate_core.fake_upstream import *  # noqa: F403
