"""The demo runs as a user would run it: a separate process, from an unrelated folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_demo_runs_from_any_folder(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OAUTHLIB_INSECURE_TRANSPORT"}
    completed = subprocess.run(
        [sys.executable, "-m", "zeep_sfrefresh", "demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    out = completed.stdout
    assert "INVALID_SESSION_ID" in out
    assert "token requests:       1" in out
    assert "SOAP posts:           2" in out
    assert "query -> 10 records" in out
    assert out.rstrip().endswith("OK")
