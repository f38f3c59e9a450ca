"""The README's Python examples run as written (against the test server).

Blocks fenced ```python are complete programs and run; ```py marks fragments.
The ACL lines of "ACL: least privilege" are the ones tests/faults/test_acl.py runs.
"""

from __future__ import annotations

import importlib.util
import pathlib
import re
import subprocess
import sys

import pytest

README = pathlib.Path(__file__).parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
ACL_TESTS = pathlib.Path(__file__).parent / "faults" / "test_acl.py"
ACL_SECTION = "ACL: least privilege"


def test_readme_has_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, redis_url, isolated_env, tmp_path):
    code = BLOCKS[index]
    env = dict(isolated_env, MDFLOW_REDIS_URL=redis_url)
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"README example {index} failed:\n{code}\n{result.stderr}"


def acl_lines_of_test_acl() -> set[str]:
    """Every ACL line tests/faults/test_acl.py runs: ``ACL``, ``ACL_REDIS6``, ``TOPOLOGY``."""
    spec = importlib.util.spec_from_file_location("readme_checks_test_acl", ACL_TESTS)
    assert spec is not None and spec.loader is not None, f"cannot load {ACL_TESTS}"
    module = importlib.util.module_from_spec(spec)
    tests_dir = str(ACL_TESTS.parent.parent)  # it imports `helpers`, as pytest lets it
    added = tests_dir not in sys.path
    if added:
        sys.path.insert(0, tests_dir)
    try:
        spec.loader.exec_module(module)
    finally:
        if added:
            sys.path.remove(tests_dir)
    return {*module.ACL.values(), *module.ACL_REDIS6.values(), module.TOPOLOGY}


def readme_acl_lines(text: str) -> tuple[list[str], list[str]]:
    """``ACL SETUSER`` lines of the README: those in code blocks of the ACL section, and all
    others anywhere (in code blocks or `inline code`, white space collapsed)."""
    in_section, fence = [], None
    elsewhere, prose = [], []
    section = False
    for line in text.splitlines():
        stripped = line.strip()
        if fence is None and stripped.startswith("```"):
            fence = stripped[:3]
            continue
        if fence is not None:
            if stripped == fence:
                fence = None
            elif stripped.startswith("ACL SETUSER"):
                (in_section if section else elsewhere).append(stripped)
            continue
        heading = re.match(r"(#{1,3}) (.*)", line)
        if heading:
            section = heading[2].strip() == ACL_SECTION
        prose.append(line)
    spans = re.findall(r"`(ACL SETUSER [^`]+)`", "\n".join(prose))
    elsewhere += [" ".join(span.split()) for span in spans]
    return in_section, elsewhere


def test_readme_acl_lines_are_the_tested_ones():
    tested = acl_lines_of_test_acl()
    in_section, elsewhere = readme_acl_lines(README.read_text())
    assert in_section, f"README has no ACL SETUSER lines in a code block under {ACL_SECTION!r}"
    missing = sorted(tested - set(in_section))
    assert not missing, f"ACL lines test_acl.py runs but README's {ACL_SECTION!r} lacks: {missing}"
    untested = sorted(set(in_section + elsewhere) - tested)
    assert not untested, f"README ACL lines that tests/faults/test_acl.py does not run: {untested}"
