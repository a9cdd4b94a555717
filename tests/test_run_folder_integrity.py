"""A run folder nothing can corrupt: one writer at a time (a real second process holds the lock), inputs that
are outputs refused before anything is written, values that cannot work refused at the command line, page
text escaped on the terminal, credentials masked in messages."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline import schemas
from pipeline.cli import main, mask_credentials
from pipeline.explain import format_text

HOLD = """
import sys, time
from pipeline.runlock import RunLock
with RunLock(sys.argv[1], "curate test-holder"):
    print("held", flush=True)
    time.sleep(120)
"""


def _holder(run: Path) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def _docs(folder: Path, n: int = 3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"doc_id": f"{i:020x}", "url": f"https://example.com/{i}", "text": f"page {i} " * 50} for i in range(n)]
    path = folder / "part-0.parquet"
    pq.write_table(schemas.from_rows(rows, schemas.UNIQUE), path)
    return path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_second_writer_is_refused_naming_the_holder_and_the_first_is_unharmed(tmp_path, capsys):
    run = tmp_path / "run"
    holder = _holder(run)
    try:
        code = main(["dedup", "--out", str(run), "--set", "ray.executor=local"])
        err = capsys.readouterr().err
        assert code == 2
        assert f"pid {holder.pid}" in err and "curate test-holder" in err and "--wait-lock" in err
        assert holder.poll() is None and (run / "_state" / "_lock.json").exists()  # the holder's lock stays
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_of_a_killed_writer_is_taken_over_with_a_message(tmp_path, capsys):
    run = tmp_path / "run"
    holder = _holder(run)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    _docs(tmp_path / "elsewhere")
    code = main(["dedup", "--docs", str(tmp_path / "elsewhere"), "--out", str(run), "--set", "ray.executor=local",
                 "--set", "dedup.num_partitions=1"])
    out = capsys.readouterr().out
    assert code == 0
    assert f"took over the lock of {run}" in out and f"pid {holder.pid}" in out
    assert not (run / "_state" / "_lock.json").exists()  # released at the end


def test_wait_lock_waits_for_the_holder(tmp_path):
    run = tmp_path / "run"
    holder = _holder(run)
    _docs(tmp_path / "elsewhere")
    started = time.monotonic()
    waiter = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "dedup", "--wait-lock", "--docs",
                               str(tmp_path / "elsewhere"), "--out", str(run), "--set", "ray.executor=local",
                               "--set", "dedup.num_partitions=1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    time.sleep(3)
    assert waiter.poll() is None  # still waiting
    holder.kill()
    holder.wait()
    _, err = waiter.communicate(timeout=120)
    assert waiter.returncode == 0, err
    assert time.monotonic() - started >= 3


@pytest.mark.parametrize("command, flag, dataset", [("dedup", "--docs", "unique"), ("classify", "--docs", "corpus")])
def test_an_input_inside_the_output_is_refused_and_left_unchanged(tmp_path, capsys, command, flag, dataset):
    run = tmp_path / "run"
    path = _docs(run / dataset)
    before = _digest(path)
    extra = ["--classifier", str(tmp_path / "no-classifier")] if command == "classify" else []
    code = main([command, flag, str(run / dataset), "--out", str(run), "--set", "ray.executor=local", *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{run / dataset}" in err and "overwritten while it is read" in err
    assert _digest(path) == before and sorted(p.name for p in (run / dataset).iterdir()) == ["part-0.parquet"]


@pytest.mark.parametrize("override, message", [
    ("extract.timeout_s=inf", "finite"),
    ("extract.timeout_s=1e12", "less than or equal"),
    ("extract.timeout_s=[1", "not valid YAML"),
])
def test_values_that_cannot_work_are_one_message(tmp_path, capsys, override, message):
    code = main(["extract", "--warc", "nothing.warc.gz", "--out", str(tmp_path / "run"), "--set", override])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_explain_escapes_control_characters_from_pages():
    url = "https://evil.example/\x1b[2J\nFORGED fate: kept"
    result = {"query": url, "suggestions": [], "records": [], "pages": [{
        "url": url, "doc_id": "0" * 20, "fate": "dropped at rules: x", "steps": [
            {"stage": "extract", "status": "passed", "summary": "title \x1b]0;owned\x07", "facts": {}}]}]}
    text = format_text(result)
    assert "\x1b" not in text and "\x07" not in text
    assert "\\x1b[2J\\nFORGED" in text
    assert not any(line.startswith("FORGED") for line in text.splitlines())


def test_credentials_in_urls_are_masked():
    message = "http://alice:s3cret@gpu:8000/v1 answered HTTP 401"
    assert mask_credentials(message) == "http://***@gpu:8000/v1 answered HTTP 401"
    assert mask_credentials("https://gpu:8000/v1") == "https://gpu:8000/v1"


@pytest.fixture
def small_disk(tmp_path):
    """A real 300 KiB filesystem (tmpfs; the sample extract writes about 700 KiB; mounting needs root, as in
    CI), grown later with `remount`."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _extract(out: Path) -> subprocess.CompletedProcess:
    warcs = sorted(str(p) for p in (Path(__file__).resolve().parents[1] / "data" / "sample" / "warc").glob("*.gz"))
    return subprocess.run([sys.executable, "-m", "pipeline.cli", "extract", "--warc", *warcs, "--out", str(out),
                           "--set", "ray.executor=local"], capture_output=True, text=True, timeout=600)


def test_a_full_disk_during_extract_is_one_message_and_a_rerun_on_room_equals_a_clean_run(small_disk, tmp_path):
    full = _extract(small_disk / "run")
    assert full.returncode == 2, full.stderr[-2000:]
    assert "No space left on device" in full.stderr or "no space left" in full.stderr.lower()
    assert str(small_disk / "run") in full.stderr and "Traceback" not in full.stderr
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    again = _extract(small_disk / "run")
    assert again.returncode == 0, again.stderr[-2000:]
    clean = _extract(tmp_path / "clean")
    assert clean.returncode == 0
    for dataset in ("extracted", "docs"):
        mine = sorted((small_disk / "run" / dataset).glob("*.parquet"))
        theirs = sorted((tmp_path / "clean" / dataset).glob("*.parquet"))
        assert [p.name for p in mine] == [p.name for p in theirs]
        for a, b in zip(mine, theirs, strict=True):
            assert pq.read_table(a).equals(pq.read_table(b)), a.name


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    """extract, rules and dedup over three bundled WARC files, in this process."""
    from pipeline.config import load_config
    from pipeline.run import run_stages

    out = tmp_path_factory.mktemp("damage") / "run"
    warcs = sorted(str(p) for p in (Path(__file__).resolve().parents[1] / "data" / "sample" / "warc").glob("*.gz"))
    cfg = load_config(None, [f"out={out}", f"input.warcs={warcs[:3]!r}".replace("'", '"'), "ray.executor=local",
                             "dedup.num_partitions=2"])
    run_stages(cfg, "extract", "rules", "dedup", quiet=True)
    return out


def _cut(path: Path, garbage: bool = False) -> None:
    data = path.read_bytes()
    path.write_bytes(b"not parquet at all" * 40 if garbage else data[: len(data) // 2])


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args, "--set", "ray.executor=local"],
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("damage", ["garbage unique file", "half a docs file", "half a dedup marker"])
def test_damage_is_named_by_report_and_a_rerun_repairs_it(small_run, tmp_path, damage):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    unique = sorted((run / "unique").glob("*.parquet"))
    target = {"garbage unique file": unique[0], "half a docs file": sorted((run / "docs").glob("*.parquet"))[0],
              "half a dedup marker": run / "_state" / "dedup" / f"{unique[0].stem}.json"}[damage]
    before = {p.relative_to(run): pq.read_table(p) for d in ("docs", "unique") for p in (run / d).glob("*.parquet")}
    _cut(target, garbage=damage.startswith("garbage"))

    report = _cli("report", "--out", str(run))
    assert report.returncode == 2 and str(target) in report.stderr and "Traceback" not in report.stderr
    if damage == "garbage unique file":  # explain reads unique/ (not docs/, not the markers)
        doc_id = next(d for p in sorted(small_run.glob("unique/*.parquet"))
                      for d in pq.read_table(p, columns=["doc_id"]).column(0).to_pylist())
        explain = _cli("explain", doc_id, "--out", str(run))
        assert explain.returncode == 2 and "damaged" in explain.stderr and "Traceback" not in explain.stderr

    repair = _cli("rules" if damage == "half a docs file" else "dedup", "--out", str(run))
    assert repair.returncode == 0, repair.stderr[-2000:]
    assert _cli("report", "--out", str(run), "--verify").returncode == 0
    after = {p.relative_to(run): pq.read_table(p) for d in ("docs", "unique") for p in (run / d).glob("*.parquet")}
    assert after.keys() == before.keys() and all(after[k].equals(before[k]) for k in before)


def test_half_a_settings_file_is_one_message_naming_it(small_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    settings = run / "_state" / "_settings" / "dedup.json"
    _cut(settings)
    result = _cli("dedup", "--out", str(run))
    assert result.returncode == 2 and str(settings) in result.stderr and "Traceback" not in result.stderr


def test_a_setting_added_since_the_folder_was_made_binds_only_away_from_its_default(tmp_path):
    """Upgrading the project must not lock users out of their run folders: a setting the folder's record lacks
    is accepted at its default (the old outputs were made that way) and refused at any other value."""
    from pipeline.io import RunLayout, SettingsChanged

    layout = RunLayout(tmp_path)
    (tmp_path / "_state" / "dedup").mkdir(parents=True)
    (tmp_path / "_state" / "dedup" / "part-0.json").write_text("{}")  # the stage has outputs here
    layout.record_settings("dedup", {"dedup.ngram": 5})
    defaults = lambda: {"dedup.ngram": 7, "dedup.new_switch": False}  # noqa: E731 - what a default config gives
    layout.check_settings("dedup", {"dedup.ngram": 5, "dedup.new_switch": False}, defaults)
    with pytest.raises(SettingsChanged, match="dedup.new_switch: None -> True"):
        layout.check_settings("dedup", {"dedup.ngram": 5, "dedup.new_switch": True}, defaults)
    with pytest.raises(SettingsChanged, match="dedup.ngram: 5 -> 7"):
        layout.check_settings("dedup", {"dedup.ngram": 7}, defaults)  # recorded: binding as always


def test_a_full_disk_during_distil_is_one_message_naming_the_model_file(small_disk, tmp_path):
    """fastText writes its model through a stream that ignores a full disk: the file is loaded back, and a
    model cut short on a disk without room is said as a full disk at that path (exit 2), never a 'wrong file
    format' later; nothing is installed, and a rerun with room writes the classifier."""
    import json as _json

    from classifiers.extraction_benchmark import labelled_texts, load_pages

    benchmark = Path(__file__).resolve().parents[1] / "data" / "extraction-benchmark"
    items = labelled_texts(benchmark, page_ids=sorted(load_pages(benchmark))[:20])
    labels = tmp_path / "labels.jsonl"
    labels.write_text("".join(_json.dumps({"text": t.text, "label": t.label}) + "\n" for t in items))
    command = [sys.executable, "-m", "pipeline.cli", "distil", "--labels-jsonl", str(labels), "--out",
               str(small_disk / "classifier"), "--set", "distil.tune=false", "--set", "distil.variance_seeds=0"]
    full = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert full.returncode == 2, full.stdout[-1500:] + full.stderr[-1500:]
    assert "no space left" in full.stderr.lower() and str(small_disk) in full.stderr
    assert "Traceback" not in full.stderr and "wrong file format" not in full.stderr
    assert not (small_disk / "classifier").exists()
    subprocess.run(["mount", "-o", "remount,size=512m", str(small_disk)], check=True)
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (small_disk / "classifier" / "quality.bin").stat().st_size > 1_000_000
