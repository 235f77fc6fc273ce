"""``../shared``: the data beside the clone that some tests read (the SIP
torture corpus, OpenSIPS's default script ...).

A clone outside that layout has no ``../shared``: those tests then skip,
each with the one reason :func:`missing_reason` gives.  Under CI (the ``CI``
environment variable set) none of them may skip: a missing ``../shared`` is
a failure there, so that a broken CI checkout cannot pass by skipping.

Use :func:`need_shared` as a mark (``pytestmark = need_shared("sip-corpus",
"rfc4475", "MANIFEST.tsv")``) or :func:`require_shared` inside a test or a
fixture.  The mark is enforced by :func:`pytest_runtest_setup`, which
``tests/conftest.py`` installs (this module is also a pytest plugin:
``-p shareddata``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MARK = "needs_shared"


def shared_path(*parts: str) -> Path:
    return SHARED.joinpath(*parts)


def missing_reason(*parts: str) -> Optional[str]:
    """None when ../shared/<parts> exists, else why the test cannot run."""
    path = shared_path(*parts)
    if path.exists():
        return None
    return (f"{'/'.join(('..', 'shared') + parts)} not found (looked at "
            f"{path}): these tests need the project's shared data beside the "
            f"clone")


def require_shared(*parts: str) -> Path:
    """The path ../shared/<parts>; when it is missing, skip the running
    test, or fail it under CI."""
    reason = missing_reason(*parts)
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI is set, so this is a failure, not a "
                        f"skip", pytrace=False)
        pytest.skip(reason)
    return shared_path(*parts)


def need_shared(*parts: str):
    """A mark: the test reads ../shared/<parts> (see the module doc)."""
    return getattr(pytest.mark, MARK)(*parts)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", f"{MARK}(*parts): the test reads ../shared/<parts>; it "
        f"skips when that is missing, and fails instead under CI")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    # tryfirst: before a skip mark (an empty parameter set, when the data
    # the parameters come from is missing) hides the failure under CI
    for mark in item.iter_markers(MARK):
        require_shared(*mark.args)
