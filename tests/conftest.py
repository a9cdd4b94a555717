"""Shared fixtures: the bundled sample, one local Ray (loopback) for the whole test session."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_WARCS = ROOT / "data" / "sample" / "warc"
SHARED_DATA = ROOT.parent / "shared" / "data"

# Keep every Ray socket on 127.0.0.1 (see pipeline.ray_exec.LOOPBACK_ENV); must precede `import ray`.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Token authentication for every Ray this session starts (the local one and test_job's head node), with a
# token of the session's own; Ray reads both when it is imported, so they are set here.
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray bound to 127.0.0.1, shared by every test that runs a stage on Ray."""
    import ray

    from pipeline.config import RayConfig
    from pipeline.runtime.executor import ensure_ray

    ensure_ray(RayConfig(num_cpus=2))
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """(run folder, completed process) of README Quickstart line 1 on the bundled sample, shared by the tests
    that read a whole run; they must not change it. The same command started again while the first one
    annotates is in `result.intruder` (it must be refused: one writer per run folder)."""
    from demo import curate_demo_with_a_second_writer

    out = tmp_path_factory.mktemp("demo") / "run"
    result = curate_demo_with_a_second_writer(out)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, result


@pytest.fixture
def sample_warcs() -> list[str]:
    return sorted(str(p) for p in SAMPLE_WARCS.iterdir() if p.name.endswith((".warc.gz", ".warc")))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """The tiny random-weight Llama built locally (tokenizer trained on local text), once per session."""
    from pipeline.llm.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def vllm_server(tiny_model_dir, tmp_path_factory):
    """One real vLLM OpenAI server (CPU build) on 127.0.0.1 serving the tiny model, shared by every test that
    needs it: ~20-30 s to start and ~3.3 GB RSS, so it is started once and stopped (with its process group)
    at the end of the session."""
    from pipeline.llm.server import VLLMServer

    server = VLLMServer(tiny_model_dir, log_path=tmp_path_factory.mktemp("vllm") / "server.log")
    with server:
        yield server


# --- extract: loopback Common Crawl servers (helpers in tests/servers.py) ---


@pytest.fixture(scope="session")
def cc_tree(tmp_path_factory):
    """A Common-Crawl-shaped tree (crawl-data/CC-MAIN-2024-33/warc.paths.gz + WARCs) of the bundled WARCs.
    Returns (root, listed relative paths)."""
    from servers import build_cc_tree

    root = tmp_path_factory.mktemp("cc-tree")
    warcs = sorted(p for p in SAMPLE_WARCS.iterdir() if p.name.endswith(".warc.gz"))
    return root, build_cc_tree(root, warcs)


@pytest.fixture(scope="session")
def _cc_http_session(cc_tree):
    from servers import CCHttpServer

    server = CCHttpServer(cc_tree[0]).start()
    yield server
    server.stop()


@pytest.fixture
def cc_http(_cc_http_session):
    """The loopback HTTP server over `cc_tree`, with its request log and failure injection reset."""
    _cc_http_session.reset()
    yield _cc_http_session
    _cc_http_session.reset()


@pytest.fixture(scope="session")
def moto_s3(cc_tree):
    """moto's S3 server on 127.0.0.1 holding `cc_tree` in bucket `commoncrawl-test`."""
    from servers import MotoS3Server

    server = MotoS3Server().start()
    try:
        server.upload_tree("commoncrawl-test", cc_tree[0])
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_runs(moto_s3):
    """moto's S3 server with the bucket that runs on object storage write into, and a client of it."""
    from runfolders import BUCKET, s3_client

    client = s3_client(moto_s3)
    client.create_bucket(Bucket=BUCKET)
    return moto_s3, client


@pytest.fixture(scope="session")
def local_reference(tmp_path_factory):
    """`curate run` of the run-folder tests (runfolders.run_config) in a local folder, in this process: what a run
    on object storage or on two nodes must equal. Returns the run folder and its classifier."""
    from pipeline.run import run_stages
    from pipeline.runtime.executor import LocalExecutor
    from runfolders import STAGES, run_config
    from stagehelpers import quick_classifier

    root = tmp_path_factory.mktemp("local-reference")
    classifier = quick_classifier(root)
    run_stages(run_config(str(root / "run"), classifier, root / "cache"), *STAGES, executor=LocalExecutor(),
               quiet=True)
    return root / "run", classifier
