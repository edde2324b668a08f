import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
for p in (ROOT,):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from dotaudit.rules.loader import load_rules  # noqa: E402
from dotaudit.rules.policy import Policy  # noqa: E402


@pytest.fixture(scope="session")
def pack():
    """The built-in rule pack, by name."""
    return {r.name: r for r in load_rules()}


@pytest.fixture
def policy():
    return Policy()
