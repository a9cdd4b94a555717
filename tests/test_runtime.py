"""The stage runtime's semantics, tested once for every stage: resume after a crash at each write step,
transient vs permanent errors, the settings guard, stale shards, conservation, fixable errors. Most run on
the local executor with a small stage defined here; the Ray tests kill a real worker, and a real
`curate extract` process group."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline import schemas
from pipeline.config import load_config
from pipeline.errors import OutputNotWritable
from pipeline.io import RunLayout, SettingsChanged, read_dataset
from pipeline.report import ConservationError
from pipeline.runtime import Output, Shard, ShardResult, Stage
from pipeline.runtime import shards as shard_writer
from pipeline.runtime.executor import LocalExecutor, RayExecutor
from pipeline.runtime.runner import StageFailed, run_stage
from stagehelpers import extract_run

ROOT = Path(__file__).resolve().parents[1]
CURATE = ROOT / ".venv" / "bin" / "curate"
SAMPLE_WARCS = ROOT / "data" / "sample" / "warc"
ITEMS = pa.schema([pa.field("doc_id", pa.string(), nullable=False), pa.field("value", pa.int64())])


class Numbers(Stage):
    """Shard i holds records i*10 .. i*10+9: even ones are kept, odd ones dropped (`odd`). A record listed in
    the input file `faults.json` errors: `{"transient": [ids], "permanent": [ids]}`; a shard listed under
    "crash" raises in process."""

    name = "numbers"
    outputs = (Output("numbers", ITEMS),)

    def settings(self):
        return {"numbers.parity": self.cfg.name}

    def plan(self):
        count = json.loads((Path(self.cfg.out) / "input.json").read_text())["shards"]
        return [Shard(key=f"part-{i:03d}", source=f"input-{i}", payload=i) for i in range(count)]

    def setup(self):
        return {"calls": []}

    def process(self, worker, shard):
        faults = json.loads((Path(self.cfg.out) / "input.json").read_text()).get("faults", {})
        worker["calls"].append(shard.key)
        log = Path(self.cfg.out) / "calls.log"
        with open(log, "a") as fh:
            fh.write(shard.key + "\n")
        if shard.key in faults.get("crash", []):
            raise RuntimeError(f"crash in {shard.key}")
        stats = self.new_stats(shard)
        rows, decisions, transient = [], [], 0
        for value in range(shard.payload * 10, shard.payload * 10 + 10):
            stats.input += 1
            doc_id = f"n{value}"
            kind = next((k for k in ("transient", "permanent") if value in faults.get(k, [])), None)
            if kind:
                stats.error(f"{kind}_fault")
                transient += kind == "transient"
                decisions.append({"doc_id": doc_id, "stage": self.name, "outcome": schemas.ERRORED,
                                  "reason": f"{kind}_fault", "source": shard.source})
            elif value % 2:
                stats.drop("odd")
                decisions.append({"doc_id": doc_id, "stage": self.name, "outcome": schemas.DROPPED, "reason": "odd",
                                  "source": shard.source})
            else:
                stats.kept += 1
                rows.append({"doc_id": doc_id, "value": value})
        if faults.get("miscount") == shard.key:
            stats.kept += 1
        return ShardResult(rows={"numbers": rows}, decisions=decisions, stats=stats, transient=transient)


def _setup(out: Path, shards: int = 3, **faults) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "input.json").write_text(json.dumps({"shards": shards, "faults": faults}))


def _run(out: Path, *overrides, executor=None):
    cfg = load_config(None, [f"out={out}", *overrides])
    return run_stage(Numbers(cfg), executor=executor or LocalExecutor(), quiet=True)


def _calls(out: Path) -> list[str]:
    log = out / "calls.log"
    calls = log.read_text().split() if log.exists() else []
    log.unlink(missing_ok=True)
    return calls


def _rows(out: Path):
    layout = RunLayout(out)
    kept = sorted(read_dataset(layout.dataset("numbers"), ITEMS).column("doc_id").to_pylist())
    decided = sorted(read_dataset(layout.decisions("numbers"), schemas.DECISIONS).column("doc_id").to_pylist())
    return kept, decided


def test_every_record_kept_or_decided_and_a_rerun_does_nothing(tmp_path):
    _setup(tmp_path)
    summary = _run(tmp_path)
    assert summary["complete"] and summary["input"] == 30 and summary["kept"] == 15
    assert summary["dropped"] == {"odd": 15} and _calls(tmp_path) == ["part-000", "part-001", "part-002"]
    kept, decided = _rows(tmp_path)
    assert len(kept) == len(set(kept)) == 15 and len(decided) == 15 and not set(kept) & set(decided)
    again = _run(tmp_path)
    assert _calls(tmp_path) == [] and again["shards_run"] == 0 and again["kept"] == 15
    assert RunLayout(tmp_path).is_stage_done("numbers")


@pytest.mark.parametrize("step", ["data", "decisions", "marker"])
def test_a_crash_after_each_write_step_then_rerun_loses_nothing_and_duplicates_nothing(tmp_path, monkeypatch, step):
    # A crash at an exact instant between two writes cannot be produced by a real process on demand: the
    # write functions of the runner are made to fail once, at the chosen step of shard part-001.
    _setup(tmp_path)
    clean = tmp_path / "clean"
    _setup(clean)
    _run(clean)
    real_parquet, real_json = shard_writer.write_parquet, shard_writer.write_json

    def parquet(table, path, schema):
        if "part-001" in str(path) and ((step == "data" and "numbers/" in str(path) and "decisions" not in str(path))
                                        or (step == "decisions" and "decisions" in str(path))):
            real_parquet(table, path, schema)
            raise KeyboardInterrupt("killed right after this write")
        return real_parquet(table, path, schema)

    def marker(obj, path):
        if step == "marker" and path.name == "part-001.json":
            real_json(obj, path)
            raise KeyboardInterrupt("killed right after the marker")
        return real_json(obj, path)

    monkeypatch.setattr(shard_writer, "write_parquet", parquet)
    monkeypatch.setattr(shard_writer, "write_json", marker)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path)
    monkeypatch.undo()
    assert not RunLayout(tmp_path).is_stage_done("numbers")
    _calls(tmp_path)
    summary = _run(tmp_path)
    redone = _calls(tmp_path)
    # the shard whose marker was written is done; the others (cut before their marker, or never reached) redo
    assert redone == (["part-002"] if step == "marker" else ["part-001", "part-002"])
    assert summary["complete"] and summary["input"] == 30
    assert _rows(tmp_path) == _rows(clean)


def test_transient_errors_are_redone_permanent_ones_stay(tmp_path):
    _setup(tmp_path, transient=[12], permanent=[24])
    first = _run(tmp_path)
    assert not first["complete"] and first["transient_errors"] == 1
    assert first["errored"] == {"transient_fault": 1, "permanent_fault": 1}
    assert not RunLayout(tmp_path).is_stage_done("numbers")
    _calls(tmp_path)
    again = _run(tmp_path)  # still failing: redone again, still not done
    assert _calls(tmp_path) == ["part-001"] and not again["complete"]
    _setup(tmp_path, permanent=[24])  # the source is healthy again
    healed = _run(tmp_path)
    assert _calls(tmp_path) == ["part-001"]  # only the transient shard; the permanent error is final
    assert healed["complete"] and healed["errored"] == {"permanent_fault": 1} and healed["kept"] == 14
    kept, decided = _rows(tmp_path)
    assert "n12" in kept and "n24" in decided and len(kept) + len(decided) == 30


def test_a_changed_setting_is_refused_naming_it_but_a_run_that_never_started_locks_nothing(tmp_path):
    _setup(tmp_path, shards=0)  # nothing to do: no outputs, nothing recorded
    _run(tmp_path, "name=first")
    _setup(tmp_path, crash=["part-000"])
    with pytest.raises(RuntimeError, match="crash in part-000"):
        _run(tmp_path, "name=second")  # the stage started but has no output yet: still not locked
    _setup(tmp_path)
    _run(tmp_path, "name=third")
    with pytest.raises(SettingsChanged, match=r"numbers\.parity: 'third' -> 'fourth'.*Use another --out"):
        _run(tmp_path, "name=fourth")


def test_stale_shards_are_removed_when_the_plan_shrinks(tmp_path):
    _setup(tmp_path, shards=4)
    _run(tmp_path)
    (tmp_path / "numbers" / ".part-009.parquet.abc.tmp").write_bytes(b"half-written")
    _setup(tmp_path, shards=2)
    summary = _run(tmp_path)
    layout = RunLayout(tmp_path)
    assert summary["input"] == 20 and summary["shards_run"] == 0
    assert sorted(p.name for p in layout.dataset("numbers").iterdir()) == ["part-000.parquet", "part-001.parquet"]
    assert sorted(p.stem for p in layout.decisions("numbers").iterdir()) == ["part-000", "part-001"]
    assert len(layout.shard_stats("numbers")) == 2


def test_a_shard_that_does_not_add_up_is_never_marked(tmp_path):
    _setup(tmp_path, miscount="part-001")
    with pytest.raises(ConservationError, match="part-001"):
        _run(tmp_path)
    layout = RunLayout(tmp_path)
    assert not layout.marker("numbers", "part-001").exists()
    assert not (layout.dataset("numbers") / "part-001.parquet").exists()


def test_a_stage_whose_every_input_errored_fails_after_recording_them(tmp_path):
    _setup(tmp_path, shards=1, permanent=list(range(10)))
    with pytest.raises(StageFailed, match=r"every one of its 10 input record\(s\) errored \(permanent_fault 10\)"):
        _run(tmp_path)
    assert RunLayout(tmp_path).marker("numbers", "part-000").exists()


def test_a_full_disk_is_one_fixable_error_naming_the_path(tmp_path, monkeypatch):
    # A full disk cannot be had on demand here (no tmpfs of our own): the Parquet writer raises ENOSPC.
    _setup(tmp_path)

    def full(table, path, schema):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(shard_writer, "write_parquet", full)
    with pytest.raises(OutputNotWritable, match=r"cannot write .*part-000.parquet: no space left.*Finished shards "
                                                r"are kept"):
        _run(tmp_path)


def test_out_that_is_a_file_is_refused_before_anything_runs(tmp_path):
    target = tmp_path / "a-file"
    target.write_text("not a folder")
    result = subprocess.run([str(CURATE), "extract", "--warc", str(SAMPLE_WARCS / "sample-0000.warc.gz"), "--out",
                             str(target)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"--out {target}: is a file" in result.stderr and len(result.stderr.strip().splitlines()) == 1


# ----------------------------------------------------------------------------------------------- on Ray


class DiesOnce(Numbers):
    """Its worker process dies (SIGKILL of itself) in the middle of shard part-001 on the first attempt."""

    name = "numbers"

    def process(self, worker, shard):
        flag = Path(self.cfg.out) / "died.flag"
        if shard.key == "part-001" and not flag.exists():
            flag.write_text(str(os.getpid()))
            with open(Path(self.cfg.out) / "calls.log", "a") as fh:
                fh.write(f"{shard.key}\n")
            os.kill(os.getpid(), signal.SIGKILL)
        return super().process(worker, shard)


def test_a_ray_worker_killed_mid_task_is_retried_by_ray(tmp_path, ray_local):
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import tests/
    _setup(tmp_path)
    cfg = load_config(None, [f"out={tmp_path}"])
    summary = run_stage(DiesOnce(cfg), executor=RayExecutor(cfg.ray), quiet=True)
    assert (tmp_path / "died.flag").exists() and summary["complete"] and summary["input"] == 30
    assert _calls(tmp_path).count("part-001") == 2  # the killed attempt, then Ray's retry
    clean = tmp_path / "clean"
    _setup(clean)
    _run(clean)
    assert _rows(tmp_path) == _rows(clean)


def test_kill_9_of_the_process_group_mid_stage_then_rerun_gives_the_same_documents(tmp_path):
    warcs = [str(SAMPLE_WARCS / name) for name in ("example.warc.gz", "sample-0000.warc.gz", "jwarc-cc.warc.gz",
                                                   "sample-0001.warc.gz", "whirlwind.warc.gz", "warcfile.warc.gz")]
    env = {**os.environ, "RAY_ADDRESS": ""}
    env.pop("RAY_ADDRESS")
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    command = [str(CURATE), "extract", "--warc", *warcs, "--set", "ray.max_in_flight=2", "--set", "ray.num_cpus=2"]

    extract_run(load_config(None, [f"out={clean}", "input.warcs=" + json.dumps(warcs), "ray.executor=local"]),
                quiet=True)
    process = subprocess.Popen([*command, "--out", str(killed)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        state = killed / "_state" / "extract"
        while time.monotonic() < deadline and not (state.is_dir() and list(state.glob("part-*.json"))):
            assert process.poll() is None, "the run ended before it could be killed"
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    layout = RunLayout(killed)
    assert not layout.is_stage_done("extract") and 0 < len(layout.shard_stats("extract")) < len(warcs)
    subprocess.run([*command, "--out", str(killed)], check=True, capture_output=True, cwd=ROOT, env=env, timeout=600)

    def ids(out):
        layout = RunLayout(out)
        docs = read_dataset(layout.dataset("docs"), schemas.DOCS).column("doc_id").to_pylist()
        decided = [read_dataset(layout.decisions(stage), schemas.DECISIONS).column("doc_id").to_pylist()
                   for stage in ("extract", "rules")]
        return sorted(docs), sorted(decided[0]), sorted(decided[1])

    assert ids(killed) == ids(clean) and len(ids(killed)[0]) == len(set(ids(killed)[0]))


def test_a_glob_that_matched_nothing_locks_nothing_and_the_corrected_command_runs(tmp_path):
    out = tmp_path / "run"
    wrong = subprocess.run([str(CURATE), "extract", "--warc", str(tmp_path / "nowhere" / "*.warc.gz"), "--out",
                            str(out)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr and "nowhere" in wrong.stderr
    assert not (out / "_state" / "_settings").exists()
    right = subprocess.run([str(CURATE), "extract", "--warc", str(SAMPLE_WARCS / "example.warc.gz"), "--out",
                            str(out), "--set", "ray.executor=local"], capture_output=True, text=True, cwd=ROOT,
                           timeout=300)
    assert right.returncode == 0, right.stderr[-2000:]
    assert RunLayout(out).is_stage_done("extract") and "conservation extract" in right.stdout


class Installs(Numbers):
    """Also installs a folder (as distil installs its classifier) per shard."""

    def process(self, worker, shard):
        result = super().process(worker, shard)
        made = Path(self.cfg.out) / f".made-{shard.key}"
        made.mkdir(exist_ok=True)
        (made / "model.bin").write_text(shard.key)
        result.artifacts[str(Path(self.cfg.out) / "models" / shard.key)] = made
        return result


def test_a_shard_whose_installed_artifact_was_removed_is_redone(tmp_path):
    _setup(tmp_path, shards=2)
    cfg = load_config(None, [f"out={tmp_path}"])
    run_stage(Installs(cfg), executor=LocalExecutor(), quiet=True)
    assert (tmp_path / "models" / "part-001" / "model.bin").read_text() == "part-001"
    _calls(tmp_path)
    import shutil

    shutil.rmtree(tmp_path / "models" / "part-001")
    summary = run_stage(Installs(cfg), executor=LocalExecutor(), quiet=True)
    assert _calls(tmp_path) == ["part-001"] and summary["complete"]
    assert (tmp_path / "models" / "part-001" / "model.bin").exists()
