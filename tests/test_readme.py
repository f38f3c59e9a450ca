"""The README's Python examples run as written (against the test server).

Blocks fenced ```python are complete programs and run; ```py marks fragments.
"""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

README = pathlib.Path(__file__).parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


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
