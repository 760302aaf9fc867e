"""Batch processing at scale: executors give identical outputs, workers may die, corrupt
inputs are reported and skipped, interrupted runs resume (r1-to-dl1)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from dvp import schemas as S
from dvp.errors import DvpError
from dvp.runner import r1_to_dl1, simulate, staging_dir

from .conftest import ROOT, product_tables

GAMMA = dict(energy_range=(0.3, 10.0), scatter_radius_m=200.0, reuse=5)


@pytest.fixture(scope="module")
def r1_set(tmp_path_factory):
    """Three small R1 products (several row groups each) and the serial reference DL1."""
    base = tmp_path_factory.mktemp("scale")
    products = []
    for k in range(3):
        p = base / f"r1-{k}"
        simulate("gamma", 60, p, seed=20 + k, obs_id=10 + k, **GAMMA)
        products.append(p)
    ref = base / "ref"
    r1_to_dl1(products, ref, workers=1, task_row_groups=1)
    return base, products, ref


def test_local_pool_and_dask_give_identical_outputs(r1_set, tmp_path):
    from distributed import LocalCluster
    _, products, ref = r1_set
    n_tasks = len(json.loads((ref / "provenance.json").read_text())["tasks"])
    assert n_tasks >= 6   # several tasks per product: the split is really exercised
    r1_to_dl1(products, tmp_path / "pool", workers=2, task_row_groups=1)
    assert product_tables(tmp_path / "pool") == product_tables(ref)
    # a real scheduler and two worker processes on loopback, started here
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      host="127.0.0.1") as cluster:
        r1_to_dl1(products, tmp_path / "dask", scheduler=cluster.scheduler_address, task_row_groups=1)
    assert product_tables(tmp_path / "dask") == product_tables(ref)
    prov = json.loads((tmp_path / "dask" / "provenance.json").read_text())
    assert prov["executor"]["scheduler"].startswith("tcp://127.0.0.1")
    assert len(prov["tasks"]) == n_tasks and all(len(t["sha256"]) == 64 for t in prov["tasks"])


@pytest.mark.parametrize("executor", ["pool", "dask"])
def test_killed_worker_is_retried(r1_set, tmp_path, monkeypatch, executor):
    _, products, ref = r1_set
    marker = tmp_path / "killed"
    monkeypatch.setenv("DVP_KILL_WORKER_ONCE", str(marker))
    if executor == "pool":
        r1_to_dl1(products, tmp_path / "out", workers=2, task_row_groups=1)
    else:
        from distributed import LocalCluster
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                          host="127.0.0.1") as cluster:
            r1_to_dl1(products, tmp_path / "out", scheduler=cluster.scheduler_address, task_row_groups=1)
    assert marker.is_file()                       # a worker really died (SIGKILL) mid-run
    assert product_tables(tmp_path / "out") == product_tables(ref)


def _corrupt_middle(path):
    """Overwrite bytes inside the first data page: the footer still parses, the data does not."""
    data = bytearray(path.read_bytes())
    data[200:20000] = b"\xff" * (20000 - 200)
    path.write_bytes(bytes(data))


def test_corrupt_input_is_reported_and_the_others_written(r1_set, tmp_path):
    base, products, ref = r1_set
    bad = tmp_path / "bad"
    shutil.copytree(products[1], bad)
    f = sorted((bad / "r1").rglob("*.parquet"))[0]
    _corrupt_middle(f)
    inputs = [products[0], bad, products[2]]
    # default: nothing is written, the failure is named, completed tasks stay for a resume
    with pytest.raises(DvpError) as e:
        r1_to_dl1(inputs, tmp_path / "out", workers=2, task_row_groups=1)
    msg = str(e.value)
    assert "tasks failed" in msg and str(f) in msg and "\n" not in msg
    assert not (tmp_path / "out").exists() and staging_dir(tmp_path / "out").is_dir()
    # --skip-failed: the good inputs are written, the failure recorded; CLI exit code 1
    res = subprocess.run([sys.executable, "-m", "dvp.cli", "r1-to-dl1", *map(str, inputs), "-o", str(tmp_path / "out"),
                          "--skip-failed", "-j", "2", "--task-size", "1", "-q"], capture_output=True, text=True,
                         cwd=ROOT)
    assert res.returncode == 1, res.stderr
    assert "failed" in res.stderr and str(f) in res.stderr
    prov = json.loads((tmp_path / "out" / "provenance.json").read_text())
    assert prov["failed"] and all(str(f) in x for x in prov["failed"])
    got = pq.read_table(tmp_path / "out" / "dl1", columns=[S.OBS_ID, S.EVENT_ID, S.TEL_ID])
    want = pq.read_table(ref / "dl1", columns=[S.OBS_ID, S.EVENT_ID, S.TEL_ID])
    obs_got, obs_want = set(got.column(S.OBS_ID).to_pylist()), set(want.column(S.OBS_ID).to_pylist())
    assert obs_got == obs_want   # every product contributed (only the corrupt row groups are missing)
    bad_obs = 11
    n_bad_file = pq.ParquetFile(f).metadata.num_rows
    assert want.num_rows - got.num_rows <= n_bad_file
    assert got.num_rows == len({tuple(r.values()) for r in got.to_pylist()})   # no duplicates
    assert np.sum(np.asarray(got.column(S.OBS_ID)) != bad_obs) == np.sum(np.asarray(want.column(S.OBS_ID)) != bad_obs)


@pytest.mark.parametrize("sig,workers", [(signal.SIGKILL, "1"), (signal.SIGINT, "2")])
def test_interrupted_run_resumes_without_loss_or_duplicates(r1_set, tmp_path, sig, workers):
    """Killed (SIGKILL, possibly mid-write) or Ctrl-C'd (SIGINT: the pool stops at once,
    exit code 130): a re-run resumes and ends with exactly the uninterrupted output."""
    _, products, ref = r1_set
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "dvp.cli", "r1-to-dl1", *map(str, products), "-o", str(out), "-j", workers,
           "--task-size", "1", "-q"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    tasks = staging_dir(out) / "tasks"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if tasks.is_dir() and len(list(tasks.glob("*.json"))) >= 2:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    os.kill(proc.pid, sig)                          # mid-run, possibly mid-write
    rc = proc.wait(timeout=60)
    assert rc == (130 if sig == signal.SIGINT else -signal.SIGKILL)
    assert not out.exists()
    n_done = len(list(tasks.glob("*.json")))
    assert n_done >= 2
    res = subprocess.run(cmd[:-1], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "resuming" in res.stderr
    assert product_tables(out) == product_tables(ref)
    assert not staging_dir(out).exists()
    prov = json.loads((out / "provenance.json").read_text())
    assert len(prov["tasks"]) == len(json.loads((ref / "provenance.json").read_text())["tasks"])


def test_stale_partial_run_is_not_reused(r1_set, tmp_path):
    """A staging directory from a run with other inputs or config is discarded, not merged."""
    _, products, ref = r1_set
    out = tmp_path / "out"
    staging = staging_dir(out)
    (staging / "tasks").mkdir(parents=True)
    (staging / "run.json").write_text(json.dumps({"fingerprint": "something else"}))
    (staging / "tasks" / "part-0000-000-000000.json").write_text("{}")
    r1_to_dl1(products, out, workers=1, task_row_groups=1)
    assert product_tables(out) == product_tables(ref)


def _square_or_die(x):
    if x == 7:
        os.kill(os.getpid(), signal.SIGKILL)
    return x * x


@pytest.mark.parametrize("workers", [1, 2])
def test_executor_isolates_a_task_that_kills_its_worker(workers):
    """Only the task that kills its worker fails; the others' results all come back."""
    from dvp.executor import run_tasks
    if workers == 1:   # in-process: a task's exception (not a death) is returned, not raised
        res = list(run_tasks(lambda x: 1 // (x - 7), range(10), workers=1))
        assert [i for i, _, e in res if e is not None] == [7] and isinstance(res[7][2], ZeroDivisionError)
        return
    res = sorted(run_tasks(_square_or_die, list(range(16)), workers=workers), key=lambda r: r[0])
    assert [i for i, _, e in res if e is not None] == [7]
    assert "died" in str(res[7][2])
    assert [r for i, r, e in res if e is None] == [i * i for i in range(16) if i != 7]


def test_dl1_to_dl2_tasks_on_any_executor_give_the_single_task_tables(r1_set, tmp_path, monkeypatch):
    """dl1-to-dl2 cut into key-range tasks gives the tables of one task per product: in
    process, on a local pool with a worker killed mid-run, on Dask, and from a DL1 with
    one file per telescope type instead of one per R1 row group."""
    from distributed import LocalCluster

    from dvp.runner import dl1_to_dl2
    _, products, ref = r1_set
    whole = product_tables(dl1_to_dl2([ref], tmp_path / "whole", task_rows=10**9).output, by_partition=True)
    dl1_to_dl2([ref], tmp_path / "serial", workers=1, task_rows=50)
    prov = json.loads((tmp_path / "serial" / "provenance.json").read_text())
    assert len(prov["tasks"]) >= 6 and all(len(t["dl2_sha256"]) == 64 for t in prov["tasks"])
    assert product_tables(tmp_path / "serial", by_partition=True) == whole
    marker = tmp_path / "killed"
    monkeypatch.setenv("DVP_KILL_WORKER_ONCE", str(marker))
    dl1_to_dl2([ref], tmp_path / "pool", workers=2, task_rows=50)
    assert marker.is_file()                       # a worker really died (SIGKILL) mid-run
    monkeypatch.delenv("DVP_KILL_WORKER_ONCE")
    assert product_tables(tmp_path / "pool", by_partition=True) == whole
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      host="127.0.0.1") as cluster:
        dl1_to_dl2([ref], tmp_path / "dask", scheduler=cluster.scheduler_address, task_rows=50)
    assert product_tables(tmp_path / "dask", by_partition=True) == whole
    r1_to_dl1(products, tmp_path / "one", workers=1, task_row_groups=10_000)
    assert len(list((tmp_path / "one" / "dl1").rglob("*.parquet"))) < len(list((ref / "dl1").rglob("*.parquet")))
    dl1_to_dl2([tmp_path / "one"], tmp_path / "from_one", workers=1, task_rows=50)
    assert product_tables(tmp_path / "from_one", by_partition=True) == whole


def test_dl1_to_dl2_failed_task_is_reported_then_resumed(r1_set, tmp_path):
    """A corrupt DL1 file fails only the tasks that read it, with a one-line error naming
    it and no output; once the file is repaired, the re-run resumes the completed tasks."""
    from dvp.runner import dl1_to_dl2
    _, _, ref = r1_set
    want = product_tables(dl1_to_dl2([ref], tmp_path / "want", workers=1, task_rows=50).output, by_partition=True)
    src = tmp_path / "src"
    shutil.copytree(ref, src)
    f = sorted((src / "dl1").rglob("*.parquet"))[-1]
    good = f.read_bytes()
    footer = int.from_bytes(good[-8:-4], "little")   # keep the footer: the file opens, its data does not read
    f.write_bytes(good[:4] + b"\xff" * (len(good) - footer - 12) + good[-footer - 8:])
    with pytest.raises(DvpError) as e:
        dl1_to_dl2([src], tmp_path / "out", workers=2, task_rows=50)
    msg = str(e.value)
    assert "tasks failed" in msg and str(f) in msg and "\n" not in msg
    assert not (tmp_path / "out").exists()
    n_kept = len(list((staging_dir(tmp_path / "out") / "tasks").glob("*.json")))
    assert n_kept >= 1
    f.write_bytes(good)
    summary = dl1_to_dl2([src], tmp_path / "out", workers=2, task_rows=50)
    assert summary.n_resumed == n_kept and any("resuming" in w for w in summary.warnings)
    assert product_tables(tmp_path / "out", by_partition=True) == want


def test_cli_log_level_and_summary_table(r1_set, tmp_path):
    _, products, _ = r1_set
    cmd = [sys.executable, "-m", "dvp.cli", "--log-level", "DEBUG", "r1-to-dl1", str(products[0]), "-o",
           str(tmp_path / "o"), "-j", "1", "--task-size", "2"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    n_tasks = len(json.loads((tmp_path / "o" / "provenance.json").read_text())["tasks"])
    assert f"{n_tasks} tasks (0 done by an earlier run)" in res.stderr
    assert res.stderr.count("DEBUG dvp: task part-") == n_tasks       # one line per task at DEBUG
    assert "telescope events / s" in res.stderr and "inputs" in res.stderr
    res = subprocess.run([sys.executable, "-m", "dvp.cli", "--log-level", "LOUD", "info", str(products[0])],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 2 and res.stderr.strip().count("\n") == 0 and "--log-level" in res.stderr


def test_simtel_to_r1_executors_identical_and_bad_file_skipped(tmp_path):
    """simtel-to-r1 converts one file per task: the same tables serially, in a process
    pool and on Dask; with --skip-failed a truncated file is reported and left out."""
    from distributed import LocalCluster

    from dvp.runner import simtel_to_r1

    from .conftest import SIMTEL
    files = [SIMTEL / "gamma_diffuse_run000010_za20deg_azm000deg_North_alpha_6.0.0_test_file.simtel.zst",
             SIMTEL / "proton_run000201_za20deg_azm000deg_North_alpha_6.0.0_test_file.simtel.zst"]
    simtel_to_r1(files, tmp_path / "serial", workers=1)
    simtel_to_r1(files, tmp_path / "pool", workers=2)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      host="127.0.0.1") as cluster:
        simtel_to_r1(files, tmp_path / "dask", scheduler=cluster.scheduler_address)
    ref = product_tables(tmp_path / "serial")
    assert product_tables(tmp_path / "pool") == ref and product_tables(tmp_path / "dask") == ref
    assert any("part-000000" in k for k in ref)
    prov = json.loads((tmp_path / "serial" / "provenance.json").read_text())
    assert [t["input"] for t in prov["tasks"]] == [str(f.resolve()) for f in files]
    # a truncated third file: strict run fails naming it; --skip-failed writes the rest
    data = files[0].read_bytes()
    bad = tmp_path / "cut.simtel.zst"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(DvpError, match="cut.simtel.zst"):
        simtel_to_r1([*files, bad], tmp_path / "strict", workers=2)
    assert not (tmp_path / "strict").exists()
    res = subprocess.run([sys.executable, "-m", "dvp.cli", "simtel-to-r1", *map(str, files), str(bad), "-o",
                          str(tmp_path / "kept"), "--skip-failed", "-j", "2", "-q"], capture_output=True, text=True,
                         cwd=ROOT)
    assert res.returncode == 1 and "cut.simtel.zst" in res.stderr
    kept = product_tables(tmp_path / "kept")
    assert {k: v for k, v in kept.items() if k.startswith("r1/")} == {k: v for k, v in ref.items() if k.startswith("r1/")}
    assert json.loads((tmp_path / "kept" / "provenance.json").read_text())["failed"]


def test_simulate_blocks_identical_across_executors(tmp_path):
    """dvp simulate runs blocks of showers as tasks: identical tables serially, in a pool
    and on Dask; the per-shower tables cover every block in order."""
    from distributed import LocalCluster
    kw = dict(GAMMA, seed=5, obs_id=3, task_showers=15)
    simulate("gamma", 50, tmp_path / "serial", workers=1, **kw)
    simulate("gamma", 50, tmp_path / "pool", workers=2, **kw)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      host="127.0.0.1") as cluster:
        simulate("gamma", 50, tmp_path / "dask", scheduler=cluster.scheduler_address, **kw)
    ref = product_tables(tmp_path / "serial")
    assert product_tables(tmp_path / "pool") == ref and product_tables(tmp_path / "dask") == ref
    sh = pq.read_table(tmp_path / "serial" / "simulation" / "showers.parquet")
    assert sh.num_rows == 50 * GAMMA["reuse"]
    num = np.asarray(sh.column("shower_num"))
    assert np.array_equal(np.unique(num), np.arange(1, 51))            # blocks continue the numbering
    ev = np.asarray(sh.column(S.EVENT_ID))
    assert np.all(np.diff(ev) > 0)
    assert len(json.loads((tmp_path / "serial" / "provenance.json").read_text())["tasks"]) == 4


def _square(x):
    return x * x


def test_pool_broken_while_submitting_resubmits_the_rest(monkeypatch):
    """A worker that dies while tasks are still being submitted makes ``submit`` raise
    BrokenProcessPool: the tasks not yet submitted go to a fresh pool, uncharged, and
    every result comes back exactly once."""
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    from dvp import executor
    real_submit = ProcessPoolExecutor.submit
    calls = {"n": 0}

    def flaky_submit(self, fn, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:   # first pool, third task: as if a worker had just died
            raise BrokenProcessPool("a child process terminated abruptly")
        return real_submit(self, fn, *args, **kwargs)

    monkeypatch.setattr(ProcessPoolExecutor, "submit", flaky_submit)
    res = list(executor.run_tasks(_square, list(range(10)), workers=2))
    assert sorted(i for i, _, _ in res) == list(range(10))
    assert all(e is None and r == i * i for i, r, e in res)
    assert calls["n"] == 11   # 2 submitted to the first pool, 8 to the second, 1 refused
