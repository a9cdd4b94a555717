"""The whole pipeline as a Ray job on a real head node (`ray start --head` on loopback ports), submitted with
JobSubmissionClient like `ray job submit --working-dir .`; then killed midway and resubmitted."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from pipeline import schemas
from pipeline.io import RunLayout, read_dataset
from pipeline.report import build_report

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A real Ray head node on 127.0.0.1 in its own process group; stopped (by that group) afterwards."""
    from ray.job_submission import JobSubmissionClient

    port, dashboard_port, agent_port = _free_port(), _free_port(), _free_port()
    temp_dir = f"/tmp/ray-test-{port}"  # short: Ray puts unix sockets under it
    # RAY_AUTH_MODE=token and the session's RAY_AUTH_TOKEN (conftest) reach the head and this process's client.
    env = dict(os.environ, PATH=f"{VENV_BIN}:{os.environ['PATH']}", RAY_USAGE_STATS_ENABLED="0",
               RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    log = open(tmp_path_factory.mktemp("ray-head") / "head.log", "w")
    head = subprocess.Popen(
        [str(VENV_BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}", "--include-dashboard=true",
         f"--dashboard-agent-listen-port={agent_port}", "--num-cpus=2", f"--temp-dir={temp_dir}",
         "--disable-usage-stats"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    client = None
    deadline = time.time() + 120
    while client is None:
        try:
            client = JobSubmissionClient(f"http://127.0.0.1:{dashboard_port}")
        except Exception as exc:  # noqa: BLE001 - the dashboard is still starting
            if time.time() > deadline or head.poll() is not None:
                os.killpg(head.pid, signal.SIGKILL)
                raise RuntimeError(f"Ray head did not start ({exc!r}); see {log.name}") from None
            time.sleep(1)
    yield client
    os.killpg(head.pid, signal.SIGTERM)
    try:
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait()
    # processes of this head (and only this head) carry its unique temp dir on their command line
    subprocess.run(["pkill", "-KILL", "-f", temp_dir], check=False)
    shutil.rmtree(temp_dir, ignore_errors=True)
    log.close()


def _submit(client, entrypoint: str) -> str:
    """Submit like `ray job submit --working-dir .`; retry while the head's job agent is still starting."""
    deadline = time.time() + 120
    while True:
        try:
            return client.submit_job(
                entrypoint=entrypoint,
                runtime_env={"working_dir": str(ROOT), "excludes": ["runs/", "benchmarks/", "docs/", "*.ipynb"]},
            )
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or time.time() > deadline:
                raise
            time.sleep(2)


def _wait(client, job_id: str, timeout: float = 900) -> str:
    from ray.job_submission import JobStatus

    deadline = time.time() + timeout
    while time.time() < deadline:
        status = client.get_job_status(job_id)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            return status
        time.sleep(2)
    raise TimeoutError(f"job {job_id} still {client.get_job_status(job_id)} after {timeout}s")


def _entrypoint(out: Path, llm_url: str) -> str:
    # The session's vLLM server stands in for the one the demo config starts itself (saves ~30 s per job).
    return (f"python -m jobs.curate --config jobs/configs/demo.yaml --out {out} "
            f"--llm-url {llm_url}")  # an endpoint named on the command line: no tiny server of its own


def _final_state(out: Path) -> dict:
    """Row counts of the stages whose output does not depend on the LLM's answers (a job killed mid-annotate
    batches its requests differently on resubmit, and a random model's answer can follow the batch), and
    the corpus's consistency with its threshold."""
    layout = RunLayout(out)
    docs = read_dataset(layout.dataset("docs"), schemas.DOCS, columns=["doc_id"]).column("doc_id").to_pylist()
    unique = read_dataset(layout.dataset("unique"), schemas.UNIQUE, columns=["doc_id"]).column("doc_id").to_pylist()
    scores = read_dataset(layout.dataset("scores"), schemas.SCORED, columns=["doc_id", "quality_prob"]).to_pylist()
    corpus = read_dataset(layout.dataset("corpus"), schemas.SCORED, columns=["doc_id"]).column("doc_id").to_pylist()
    threshold = json.loads(layout.stage_marker("classify").read_text())["threshold"]
    assert len(docs) == len(set(docs)) and len(corpus) == len(set(corpus)), "duplicate doc_ids"
    assert sorted(corpus) == sorted(r["doc_id"] for r in scores if r["quality_prob"] >= threshold)
    safe = read_dataset(layout.dataset("safe"), schemas.SAFE, columns=["doc_id"]).column("doc_id").to_pylist()
    assert sorted(r["doc_id"] for r in scores) == sorted(safe) and set(safe) <= set(unique)  # classify reads safe/
    assert build_report(layout)["conserved"]
    return {"docs": len(docs), "unique": len(unique), "safe": len(safe), "scored": len(scores),
            "kept_any": len(corpus) > 0}


def test_job_runs_pipeline_then_survives_a_kill_and_resubmit(ray_head, vllm_server, tmp_path):
    client = ray_head
    clean_out = tmp_path / "clean"
    job = _submit(client, _entrypoint(clean_out, vllm_server.url))
    status = _wait(client, job)
    logs = client.get_job_logs(job)
    assert status == "SUCCEEDED", logs[-3000:]
    assert "conservation extract" in logs and "[ok]" in logs
    reference = _final_state(clean_out)
    assert reference["kept_any"]

    # Kill a second run midway (after extract has written shards), resubmit, and compare.
    killed_out = tmp_path / "killed"
    job = _submit(client, _entrypoint(killed_out, vllm_server.url))
    deadline = time.time() + 300
    layout = RunLayout(killed_out)
    while not layout.is_stage_done("extract") and time.time() < deadline:
        time.sleep(0.5)
    client.stop_job(job)
    assert _wait(client, job) in ("STOPPED", "FAILED")
    assert not layout.report_path.exists() or not (killed_out / "corpus" / "_manifest.json").exists()
    job = _submit(client, _entrypoint(killed_out, vllm_server.url))
    status = _wait(client, job)
    assert status == "SUCCEEDED", client.get_job_logs(job)[-3000:]
    assert _final_state(killed_out) == reference
