"""README Quickstart line 1 as the tests run it: `curate run jobs/configs/demo.yaml` into a folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CURATE = Path(sys.executable).with_name("curate")


def curate_demo(out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(CURATE), "run", "jobs/configs/demo.yaml", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
