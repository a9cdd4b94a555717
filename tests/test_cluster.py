"""Two Ray nodes on loopback, each with a disk of its own for the run cache, and the run folder on object storage
(moto's S3 server): `curate run` submitted as a Ray job runs every CPU stage's tasks on both nodes and ends
equal to a one-node local run; with the second node killed mid-stage, the job (or its resubmission) still
finishes with nothing lost or duplicated.

The second node is a real `ray start --address` in a mount namespace of its own (`unshare --mount`), where the
run cache's path is bind-mounted to another folder: its workers cannot see what the head's wrote on disk,
only what went through the store."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from runfolders import BUCKET, ROOT, assert_same_run, keys, run_config

VENV_BIN = ROOT / ".venv" / "bin"
pytestmark = pytest.mark.slow
# the stages whose shards run as Ray tasks or actors (rules and decide are cheap: one process, no Ray)
RAY_STAGES = ["extract", "dedup", "safety", "classify-score"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ray_env() -> dict[str, str]:
    return dict(os.environ, PATH=f"{VENV_BIN}:{os.environ['PATH']}", RAY_USAGE_STATS_ENABLED="0",
                RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")


class TwoNodes:
    """A head node and a second node on 127.0.0.1, each in its own process group."""

    def __init__(self, folder: Path):
        self.port, self.dashboard = _free_port(), _free_port()
        self.tag = f"/tmp/ray-2n-{self.port}"  # short: Ray puts unix sockets under it; on every process's command line
        self.cache = Path(f"/tmp/curate-2n-{self.port}/cache")  # the run cache: this path on both nodes
        self.second_disk = folder / "second-node-disk"
        self.folder = folder
        self.head = self.second = None

    def start(self) -> TwoNodes:
        from ray.job_submission import JobSubmissionClient

        self.cache.mkdir(parents=True)
        self.second_disk.mkdir()
        self.head = subprocess.Popen(
            [str(VENV_BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={self.port}",
             "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard}", "--include-dashboard=true",
             f"--dashboard-agent-listen-port={_free_port()}", "--num-cpus=1", f"--temp-dir={self.tag}-head",
             "--disable-usage-stats"],
            env=_ray_env(), stdout=open(self.folder / "head.log", "w"), stderr=subprocess.STDOUT,
            start_new_session=True)
        deadline = time.time() + 120
        self.client = None
        while self.client is None:
            try:
                self.client = JobSubmissionClient(f"http://127.0.0.1:{self.dashboard}")
            except Exception as exc:  # noqa: BLE001 - the dashboard is still starting
                if time.time() > deadline or self.head.poll() is not None:
                    raise RuntimeError(f"Ray head did not start ({exc!r})") from None
                time.sleep(1)
        self.start_second()
        return self

    def start_second(self) -> None:
        join = (f"mount --bind {self.second_disk} {self.cache} && exec {VENV_BIN / 'python'} "
                f"{Path(__file__).parent / 'ray_join.py'} start --block "
                f"--address=127.0.0.1:{self.port} --node-ip-address=127.0.0.1 --num-cpus=1 "
                f"--dashboard-agent-listen-port={_free_port()} --temp-dir={self.tag}-second --disable-usage-stats")
        self.second = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", join],
                                       env=_ray_env(), stdout=open(self.folder / "second.log", "w"),
                                       stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 120
        while len(self.alive_nodes()) < 2:
            assert self.second.poll() is None and time.time() < deadline, (self.folder / "second.log").read_text()
            time.sleep(1)

    def alive_nodes(self) -> list[str]:
        from ray.util.state import list_nodes

        nodes = list_nodes(address=f"127.0.0.1:{self.port}", filters=[("state", "=", "ALIVE")])
        return [node.node_id for node in nodes]

    def kill_second(self) -> None:
        os.killpg(self.second.pid, signal.SIGKILL)
        self.second.wait()
        subprocess.run(["pkill", "-KILL", "-f", f"{self.tag}-second"], check=False)

    def stop(self) -> None:
        for process in (self.second, self.head):  # nothing of these nodes is worth keeping: no graceful stop
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        # processes of these nodes (and only these) carry their temp dirs on their command line
        subprocess.run(["pkill", "-KILL", "-f", self.tag], check=False)
        for path in (f"{self.tag}-head", f"{self.tag}-second", str(self.cache.parent)):
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    if subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare --mount is not permitted here (a disk of its own for the second node needs root)")
    nodes = TwoNodes(tmp_path_factory.mktemp("two-nodes"))
    try:
        yield nodes.start()
    finally:
        nodes.stop()


def _submit(nodes: TwoNodes, config: Path) -> str:
    deadline = time.time() + 120
    while True:
        try:
            return nodes.client.submit_job(
                entrypoint=f"python -m jobs.curate --config {config}",
                runtime_env={"working_dir": str(ROOT), "excludes": ["runs/", "benchmarks/", "docs/", "*.ipynb"]})
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or time.time() > deadline:
                raise
            time.sleep(2)


def _wait(nodes: TwoNodes, job: str, timeout: float = 900) -> str:
    from ray.job_submission import JobStatus

    deadline = time.time() + timeout
    while time.time() < deadline:
        status = nodes.client.get_job_status(job)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            return status
        time.sleep(2)
    raise TimeoutError(f"job {job} still running after {timeout}s")


def _config(nodes: TwoNodes, server, classifier: Path, name: str, folder: Path) -> tuple[str, Path]:
    url = f"s3://{BUCKET}/{name}"
    # two score actors and two shards in flight per CPU: enough work for both nodes in every stage
    cfg = run_config(url, classifier, nodes.cache, server.storage_options(),
                     ["classify.num_actors=2", "ray.max_in_flight=4"])
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return url, path


def _start(nodes: TwoNodes, s3_runs, local_reference, name: str, folder: Path) -> tuple[str, Path, str]:
    """`curate run` of the run-folder tests into s3://runs/<name>, submitted as a job: its URL, config, job id."""
    url, config = _config(nodes, s3_runs[0], local_reference[1], name, folder)
    return url, config, _submit(nodes, config)


def _nodes_by_stage(nodes: TwoNodes, job: str) -> dict[str, set[str]]:
    from ray.util.state import list_tasks

    tasks = list_tasks(address=f"127.0.0.1:{nodes.port}", filters=[("job_id", "=", _job_id(nodes, job))],
                       limit=10_000, detail=True, raise_on_missing_output=False)
    ran: dict[str, set[str]] = defaultdict(set)
    for task in tasks:
        if task.state == "FINISHED" and task.node_id:
            ran[task.name.split(":")[0]].add(task.node_id)
    return ran


def _job_id(nodes: TwoNodes, submission_id: str) -> str:
    return nodes.client.get_job_info(submission_id).job_id


def test_a_job_on_two_nodes_runs_every_cpu_stage_on_both_and_equals_a_local_run(
        two_nodes, s3_runs, local_reference, tmp_path):
    url, _, job = _start(two_nodes, s3_runs, local_reference, "two-nodes", tmp_path)
    status = _wait(two_nodes, job)
    assert status == "SUCCEEDED", two_nodes.client.get_job_logs(job)[-3000:]
    ran = _nodes_by_stage(two_nodes, job)
    both = set(two_nodes.alive_nodes())
    for stage in RAY_STAGES:
        assert ran[stage] == both, f"{stage} ran on {len(ran[stage])} node(s)"
    # the second node's disk holds what its workers copied in and wrote, not what only the driver writes
    assert any(two_nodes.second_disk.rglob("*.parquet"))
    assert not any(two_nodes.second_disk.rglob("corpus/*.parquet"))
    copy = next(p for p in (two_nodes.cache / "runs").iterdir() if "two-nodes" in p.name)
    assert_same_run(copy, url, local_reference[0])


def test_a_job_whose_second_node_dies_mid_stage_still_finishes_with_nothing_lost(
        two_nodes, s3_runs, local_reference, tmp_path):
    url, config, job = _start(two_nodes, s3_runs, local_reference, "node-killed", tmp_path)
    client = s3_runs[1]
    deadline = time.time() + 300
    while not [k for k in keys(client, "node-killed/_state/extract/") if "/part-" in k]:
        assert time.time() < deadline and two_nodes.client.get_job_status(job) in ("PENDING", "RUNNING")
        time.sleep(0.2)
    two_nodes.kill_second()
    status = _wait(two_nodes, job)
    if status != "SUCCEEDED":  # Ray gave up on a task of the dead node: the same job again finishes the run
        job = _submit(two_nodes, config)
        status = _wait(two_nodes, job)
    assert status == "SUCCEEDED", two_nodes.client.get_job_logs(job)[-3000:]
    copy = next(p for p in (two_nodes.cache / "runs").iterdir() if "node-killed" in p.name)
    assert_same_run(copy, url, local_reference[0])
