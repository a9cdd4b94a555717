"""README Quickstart line 1 as the tests run it: `curate run jobs/configs/demo.yaml` into a folder."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CURATE = Path(sys.executable).with_name("curate")


def curate_demo(out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(CURATE), "run", "jobs/configs/demo.yaml", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)


def curate_demo_with_a_second_writer(out: Path) -> subprocess.CompletedProcess:
    """The demo, and the same command started again into the same folder while the first one is annotating
    (its vLLM server up, requests in flight): the first run's result, with the second one's as `.intruder`."""
    command = [str(CURATE), "run", "jobs/configs/demo.yaml", "--out", str(out)]
    first = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stderr: list[str] = []
    drain = threading.Thread(target=lambda: stderr.extend(first.stderr), daemon=True)  # progress bars
    drain.start()
    stdout, intruder = [], None
    for line in first.stdout:
        stdout.append(line)
        if intruder is None and line.startswith("[run] annotate ..."):
            intruder = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    first.wait(timeout=900)
    drain.join(timeout=10)
    result = subprocess.CompletedProcess(command, first.returncode, "".join(stdout), "".join(stderr))
    result.intruder = intruder
    return result
