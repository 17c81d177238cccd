"""Faults a sweep meets and must survive without losing or misfiling a run: a kernel or a worker killed mid-run
(as the out-of-memory killer does), the sweep itself killed, two sweeps on one folder, run files left unfinished
(a truncated archive, NaN metrics), read-only folders, thread counts that must not follow `-j`, and the bad
grids and kernels that stop a sweep before it starts.

Most runs are toy notebooks (seconds each); the worker test runs the experiment notebook on the tiny digits
scenes, since only a real run can show that a rerun gives the same numbers to the bit."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import nbformat
import numpy as np
import pytest

from mlrpl.run import SMOKE
from mlrpl.grid import GridError, expand
from mlrpl.sweep import _Kernel, _run_job, run_sweep

root = Path(__file__).resolve().parent.parent
TOY = root / "tests" / "toy_run.ipynb"
TRAIN = root / "nbs" / "experiments" / "train.ipynb"
MLRPL = [sys.executable, "-c", "import sys; from mlrpl.sweep import main; sys.exit(main())"]  # the console script's body

# A toy run that leaves every file a finished experiment run holds (metrics.json last) and the threads its kernel was given.
FULL_PARAMS = '''dataset: str = "toy"  # stands in for the dataset
method: str = "a"  # stands in for the method
label: str = ""  # this configuration's name
known_prop: float = 0.1  # stands in for the share of known labels
seed: int = 0  # the seed
secs: float = 0.0  # how long the run takes
threads: int = 1  # the run's compute threads
nan: bool = False  # a run that tested on nothing: NaN metrics
fail_after: bool = False  # fail after writing every file
results_dir: str = ""  # the run folder
resume: bool = True  # recorded in metrics.json'''
FULL_BODY = '''import json, os, time
from pathlib import Path
import numpy as np
out = Path(results_dir)
out.mkdir(parents=True, exist_ok=True)
(out/"kernel.pid").write_text(str(os.getpid()))
(out/"params.json").write_text(json.dumps(dict(dataset=dataset, method=method, label=label, known_prop=known_prop, seed=seed,
                                               secs=secs, threads=threads, nan=nan, fail_after=fail_after)))
time.sleep(secs)
np.savez_compressed(out/"predictions.npz", logits=np.arange(3000.0))
np.savez_compressed(out/"analysis.npz", features=np.arange(3000.0))
(out/"per_class.csv").write_text("class,AP\\nzero,0.5\\n")
(out/"metrics.json").write_text(json.dumps(dict(test_mAP_last=float("nan") if nan else 0.5, resume=resume,
                                                omp=os.environ.get("OMP_NUM_THREADS"), mkl=os.environ.get("MKL_NUM_THREADS"))))
if fail_after: raise RuntimeError("the toy run fails after writing its files")'''


def _full_toy(tmp_path) -> Path:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(FULL_PARAMS, metadata={"tags": ["parameters"]}),
                                         nbformat.v4.new_code_cell(FULL_BODY)],
                                  metadata={"kernelspec": {"name": "python3", "display_name": "python3", "language": "python"}})
    path = tmp_path / "full_toy.ipynb"
    nbformat.write(nb, path)
    return path


def _grid(tmp_path, body: str, notebook=None, name="toy") -> Path:
    "A grid of toy runs; the toy of tests/toy_run.ipynb leaves params.json and metrics.json only."
    files = "" if notebook else "run_files: [params.json, metrics.json]\n"
    p = tmp_path / f"{name}.yaml"
    p.write_text(f"name: {name}\nnotebook: {notebook or TOY}\n{files}{body}")
    return p


def _sweep(grid, results, *args, env=None, timeout=300, prefix=()):
    return subprocess.run([*prefix, *MLRPL, "sweep", str(grid), "--results", str(results), *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


def _start(grid, results, *args):
    return subprocess.Popen([*MLRPL, "sweep", str(grid), "--results", str(results), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(path: Path, p=None, timeout=120):
    deadline = time.monotonic() + timeout
    while not path.is_file():
        assert p is None or p.poll() is None, p.stdout.read()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    "Whether the process exists at all (a zombie, never reaped, does)."
    return Path(f"/proc/{pid}").exists()


def _gone(pid: int, timeout=20) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline: time.sleep(0.1)
    return not _alive(pid)


def _state(results, name="toy") -> dict:
    return json.loads((Path(results) / name / "sweep.json").read_text())


# --- a killed kernel: the hang ---------------------------------------------------------------------------------------

def test_a_killed_kernel_fails_its_run_the_worker_reaps_it_and_the_sweep_goes_on(tmp_path):
    grid = _grid(tmp_path, "variants: [{dataset: d1, secs: 300}, {dataset: d2, secs: 4}]\n")
    run1, run2 = (tmp_path / "runs" / "toy" / d / "a" / "p0.1-s0" for d in ("d1", "d2"))
    p = _start(grid, tmp_path / "runs", "-j", "1")
    _wait_for(run1 / "kernel.pid", p)
    kernel = int((run1 / "kernel.pid").read_text())
    os.kill(kernel, signal.SIGKILL)  # as the out-of-memory killer does
    _wait_for(run2 / "kernel.pid", p, timeout=60)  # the next run started, in a new kernel of the same worker
    assert not _alive(kernel), "the dead kernel was left a zombie"
    out, _ = p.communicate(timeout=60)  # bounded: the killed run would have taken 300 s
    assert p.returncode == 1, out
    assert f"d1/a/p0.1-s0: the kernel (pid {kernel}) died: killed by SIGKILL (signal 9" in out, out
    state = _state(tmp_path / "runs")
    assert state["state"] == "failed"
    assert [r["status"] for r in state["runs"]] == ["failed", "done"]
    assert state["runs"][0]["error"].startswith(f"the kernel (pid {kernel}) died: killed by SIGKILL")
    assert state["runs"][0]["worker"] == state["runs"][1]["worker"]  # the worker lived on
    assert int((run2 / "kernel.pid").read_text()) != kernel


# --- stopping ---------------------------------------------------------------------------------------------------------

def test_a_killed_sweep_stops_its_runs_and_its_rerun_continues(tmp_path):
    grid = _grid(tmp_path, "base: {secs: 300}\n")
    run = tmp_path / "runs" / "toy" / "toy" / "a" / "p0.1-s0"
    p = _start(grid, tmp_path / "runs")
    _wait_for(run / "kernel.pid", p)
    kernel = int((run / "kernel.pid").read_text())
    p.kill(); p.wait()
    assert _gone(kernel), "the run of a killed sweep went on"  # its worker saw the sweep gone and stopped it
    r = _sweep(grid, tmp_path / "runs", "--set", "secs=0")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"taken over from sweep pid {p.pid}" in r.stdout, r.stdout
    assert json.loads((run / "metrics.json").read_text())["resume"] is True
    assert [x["status"] for x in _state(tmp_path / "runs")["runs"]] == ["done"]


def test_a_killed_worker_fails_its_run_and_the_rerun_is_bit_identical(tmp_path):
    grid = tmp_path / "real.yaml"
    base = json.dumps({**SMOKE, "method": "hst", "known_prop": 0.3, "epochs": 12})  # JSON is YAML; 12 epochs: the kill after the first lands mid-run
    grid.write_text(f"name: real\nnotebook: {TRAIN}\nbase: {base}\n")
    env = {**os.environ, "MLRPL_DATA": str(tmp_path / "data")}
    ref = _sweep(grid, tmp_path / "ref", env=env, timeout=600)  # uninterrupted; it writes the scenes and the feature cache
    assert ref.returncode == 0, ref.stdout + ref.stderr
    run = tmp_path / "runs" / "real" / "fashionscenes_digits" / "hst" / "p0.3-s0"
    p = subprocess.Popen([*MLRPL, "sweep", str(grid), "--results", str(tmp_path / "runs")], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for(run / "checkpoint.pt", p)  # its first epoch has ended
    worker = _state(tmp_path / "runs", "real")["runs"][0]["worker"]
    os.kill(worker, signal.SIGKILL)
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 1, out
    assert not (run / "metrics.json").exists(), "the run had finished before its worker was killed"
    assert f"its worker (pid {worker}) died: killed by SIGKILL" in _state(tmp_path / "runs", "real")["runs"][0]["error"]
    again = _sweep(grid, tmp_path / "runs", env=env, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    rec = _state(tmp_path / "runs", "real")["runs"][0]
    assert (rec["status"], rec["resumed"]) == ("done", True)
    a, b = run, tmp_path / "ref" / "real" / "fashionscenes_digits" / "hst" / "p0.3-s0"
    assert json.loads((a / "metrics.json").read_text()) == json.loads((b / "metrics.json").read_text())
    pa, pb = np.load(a / "predictions.npz"), np.load(b / "predictions.npz")
    assert pa.files == pb.files and all(np.array_equal(pa[k], pb[k]) for k in pa.files)


# --- one sweep to a folder ------------------------------------------------------------------------------------------

def test_a_second_sweep_on_the_folder_refuses_naming_the_holder(tmp_path):
    grid = _grid(tmp_path, "base: {secs: 300}\n")
    run = tmp_path / "runs" / "toy" / "toy" / "a" / "p0.1-s0"
    p = _start(grid, tmp_path / "runs")
    try:
        _wait_for(run / "kernel.pid", p)
        r = _sweep(grid, tmp_path / "runs", "--set", "secs=1")  # another --set into the same folder
        assert r.returncode == 2, r.stdout + r.stderr
        assert f"the sweep folder {tmp_path / 'runs' / 'toy'} is in use by another sweep (pid {p.pid} on " in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
        assert json.loads((run / "params.json").read_text())["secs"] == 300  # the second sweep touched nothing
        assert _state(tmp_path / "runs")["state"] == "running"
    finally:
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=60)
    assert p.returncode == 130, out


def test_a_stale_lock_is_taken_over(tmp_path):
    grid = _grid(tmp_path, "")
    folder = tmp_path / "runs" / "toy"
    folder.mkdir(parents=True)
    dead = subprocess.Popen(["true"]); dead.wait()
    (folder / "sweep.lock").write_text(json.dumps(dict(pid=dead.pid, host=os.uname().nodename, started="earlier")))
    r = _sweep(grid, tmp_path / "runs")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"taken over from sweep pid {dead.pid} (started earlier), which ended without releasing it" in r.stdout
    assert (folder / "sweep.lock").read_text() == ""  # released


# --- finished means finished ------------------------------------------------------------------------------------------

def test_an_unfinished_run_is_reported_set_aside_and_run_again(tmp_path):
    grid = _grid(tmp_path, "", notebook=_full_toy(tmp_path))
    run = tmp_path / "runs" / "toy" / "toy" / "a" / "p0.1-s0"
    assert _sweep(grid, tmp_path / "runs").returncode == 0
    cut = (run / "analysis.npz").read_bytes()[:500]  # a full disk
    (run / "analysis.npz").write_bytes(cut)
    (run / "predictions.npz").write_bytes(b"")
    (run / "per_class.csv").write_text("class,AP\n")
    assert expand(grid, tmp_path / "runs")[0].problems() == {"per_class.csv": "per_class.csv has no row below its header",
        "predictions.npz": "predictions.npz is empty", "analysis.npz": "analysis.npz is not a whole zip archive (File is not a zip file)"}
    r = _sweep(grid, tmp_path / "runs")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "unfinished toy/a/p0.1-s0: per_class.csv has no row below its header; it runs again" in r.stdout, r.stdout
    rec = _state(tmp_path / "runs")["runs"][0]
    assert (rec["status"], rec["unfinished"]) == ("done", "per_class.csv has no row below its header")
    aside = {a.split(".unfinished-")[0]: a for a in rec["set_aside"]}
    assert sorted(aside) == ["analysis.npz", "per_class.csv", "predictions.npz"] and f"set aside {rec['set_aside'][0]}" in r.stdout
    assert (run / aside["analysis.npz"]).read_bytes() == cut  # kept, never deleted
    with zipfile.ZipFile(run / "analysis.npz") as z: assert z.testzip() is None
    assert expand(grid, tmp_path / "runs")[0].done


def test_nan_metrics_fail_the_sweep_on_every_pass(tmp_path):
    grid = _grid(tmp_path, "base: {nan: true}\n", notebook=_full_toy(tmp_path))
    for _ in range(2):  # a rerun does not call it finished
        r = _sweep(grid, tmp_path / "runs")
        assert r.returncode == 1, r.stdout + r.stderr
        assert "toy/a/p0.1-s0: it ended, but metrics.json: test_mAP_last is not a finite number" in r.stderr, r.stderr
        assert [x["status"] for x in _state(tmp_path / "runs")["runs"]] == ["failed"]


def test_a_failed_run_fails_the_sweep_on_reruns_even_with_whole_files(tmp_path):
    grid = _grid(tmp_path, "base: {fail_after: true}\n", notebook=_full_toy(tmp_path))
    r = _sweep(grid, tmp_path / "runs")
    assert r.returncode == 1 and "fails after writing its files" in r.stderr, r.stdout + r.stderr
    r = _sweep(grid, tmp_path / "runs")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "unfinished toy/a/p0.1-s0: it failed in the last sweep (PapermillExecutionError" in r.stdout, r.stdout


# --- read-only folders ------------------------------------------------------------------------------------------------

def _read_only(path: Path) -> list[str]:
    "Make `path` read-only for a command; returns the prefix that runs it so (root ignores file modes: a read-only bind mount)."
    if os.geteuid() != 0:
        path.chmod(0o555)
        return []
    probe = subprocess.run(["unshare", "-m", "sh", "-c", 'mount --bind -o ro "$0" "$0" && ! touch "$0/probe" 2>/dev/null', str(path)],
                           capture_output=True) if shutil.which("unshare") else None
    if probe is None or probe.returncode != 0: pytest.skip("making a folder read-only as root needs `unshare -m` and mount")
    return ["unshare", "-m", "sh", "-c", 'mount --bind -o ro "$0" "$0" && exec "$@"', str(path)]


def test_a_read_only_sweep_folder_is_one_error_before_any_run(tmp_path):
    grid = _grid(tmp_path, "")
    folder = tmp_path / "runs" / "toy"
    folder.mkdir(parents=True)
    r = _sweep(grid, tmp_path / "runs", prefix=_read_only(folder))
    folder.chmod(0o755)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.startswith(f"mlrpl sweep: error: the sweep folder {folder} is not writable ("), r.stderr
    assert "Traceback" not in r.stderr and list(folder.iterdir()) == []


def test_a_read_only_run_folder_is_one_error_naming_it(tmp_path):
    grid = _grid(tmp_path, "grid: {dataset: [d1, d2]}\n")
    run1, run2 = (tmp_path / "runs" / "toy" / d / "a" / "p0.1-s0" for d in ("d1", "d2"))
    run2.mkdir(parents=True)
    r = _sweep(grid, tmp_path / "runs", prefix=_read_only(run2))
    run2.chmod(0o755)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "1 run folder(s) of" in r.stderr and f"cannot be written, so no run started: the run folder {run2} is not writable (" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not (run1 / "metrics.json").exists()


def test_a_log_that_cannot_be_written_names_it_and_starts_no_kernel(tmp_path):
    (tmp_path / "file").write_text("")
    k = _Kernel("python3")
    err = _run_job(k, dict(notebook=str(TOY), output=str(tmp_path / "file" / "out.ipynb"), cwd=str(tmp_path), params={}, env={},
                           log=str(tmp_path / "file" / "papermill.log")))
    assert err == f"its log {tmp_path / 'file' / 'papermill.log'} cannot be written (Not a directory): the run folder must be writable"
    assert k.km is None


# --- threads ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_runs_threads_are_its_own_whatever_the_jobs(tmp_path, jobs):
    grid = _grid(tmp_path, "variants: [{dataset: d1, threads: 1}, {dataset: d2, threads: 2}]\n", notebook=_full_toy(tmp_path))
    r = _sweep(grid, tmp_path / "runs", "-j", jobs)
    assert r.returncode == 0, r.stdout + r.stderr
    runs = [tmp_path / "runs" / "toy" / d / "a" / "p0.1-s0" for d in ("d1", "d2")]
    m = [json.loads((x / "metrics.json").read_text()) for x in runs]
    assert [(x["omp"], x["mkl"]) for x in m] == [("1", "1"), ("2", "2")]
    state = _state(tmp_path / "runs")
    assert [x["threads"] for x in state["runs"]] == [1, 2] and "threads_per_run" not in state
    if jobs == "1":  # one worker: the second run's other threads need a new kernel
        assert state["runs"][0]["worker"] == state["runs"][1]["worker"]
        assert (runs[0] / "kernel.pid").read_text() != (runs[1] / "kernel.pid").read_text()


def test_a_notebook_without_threads_keeps_the_sweeps_environment(tmp_path):
    grid = _grid(tmp_path, "grid: {dataset: [d1, d2]}\n")
    r = _sweep(grid, tmp_path / "runs", "-j", "2", env={**os.environ, "OMP_NUM_THREADS": "3"})
    assert r.returncode == 0, r.stdout + r.stderr
    runs = [tmp_path / "runs" / "toy" / d / "a" / "p0.1-s0" for d in ("d1", "d2")]
    assert [json.loads((x / "metrics.json").read_text())["threads"] for x in runs] == ["3", "3"]  # not cores // 2


# --- bad grids and kernels, before anything runs ----------------------------------------------------------------------

def test_a_kernel_that_is_not_installed_stops_the_sweep_before_anything(tmp_path):
    with pytest.raises(GridError, match="kernel 'no-such-kernel' is not installed"):
        run_sweep(_grid(tmp_path, ""), results=tmp_path / "runs", kernel="no-such-kernel", progress=False)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("base,said", [
    ("method: no_such_method", "unknown method 'no_such_method'; available: "),
    ("options: {no_such_option: 1}", "method 'hst' has no option no_such_option; its options: ")])
def test_an_unknown_method_or_option_fails_its_run_naming_it(tmp_path, base, said):
    grid = tmp_path / "bad.yaml"
    grid.write_text(f"name: bad\nnotebook: {TRAIN}\nbase: {{{base}}}\n")
    r = _sweep(grid, tmp_path / "runs", env={**os.environ, "MLRPL_DATA": str(tmp_path / "data")})
    assert r.returncode == 1, r.stdout + r.stderr
    assert said in r.stderr, r.stderr
    run = next((tmp_path / "runs" / "bad").glob("*/*/*"))
    assert not (run / "params.json").exists() and not (tmp_path / "data").exists()  # stopped before any work
