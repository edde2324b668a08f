"""reports/ holds example reports (``make reports``); they are the goldens of the formatters.

Volatile fields are masked on both sides: the generation time and the tool version.
``python -m pytest tests/report --update-golden`` rewrites them.
"""

from __future__ import annotations

import re

import pytest

from dotaudit import __version__
from dotaudit.report import EXTENSIONS, render
from dotaudit.report.examples import EXAMPLES, FORMATS, build
from dotaudit.report.examples import main as make_reports

_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:\+00:00|Z)")


def mask(text: str) -> str:
    text = _TIME.sub("<GENERATED_AT>", text)
    return text.replace(f"dotaudit {__version__}", "dotaudit <VERSION>") \
        .replace(f'"version": "{__version__}"', '"version": "<VERSION>"')


@pytest.fixture(scope="module")
def regenerated(repo, update_golden):
    import os
    cwd = os.getcwd()
    os.chdir(repo)
    try:
        if update_golden:
            make_reports([str(repo / "reports")])
        return {name: build(name) for name in EXAMPLES}
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
@pytest.mark.parametrize("fmt", [f.value for f in FORMATS])
def test_golden(repo, regenerated, name, fmt):
    from dotaudit.report import OutputFormat
    path = repo / "reports" / f"{name}.{EXTENSIONS[OutputFormat(fmt)]}"
    assert path.exists(), "run `make reports`"
    golden = path.read_text(encoding="utf-8")
    assert str(repo) not in golden          # no path of the machine that made it
    assert mask(render(regenerated[name], fmt)) == mask(golden)
