"""The sweep runner from the command line: a stop by Ctrl-C (also in the background) or SIGTERM, the exit statuses, the console script.

The runs are `tests/toy_run.ipynb` (seconds each); `nbs/20b_sweep.ipynb` runs the experiment notebook itself."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

root = Path(__file__).resolve().parent.parent
TOY = root / "tests" / "toy_run.ipynb"
MLRPL = [sys.executable, "-c", "import sys; from mlrpl.sweep import main; sys.exit(main())"]  # the console script's body


def _grid(tmp_path, body: str) -> Path:
    p = tmp_path / "toy.yaml"
    p.write_text(f"name: toy\nnotebook: {TOY}\nrun_files: [params.json, metrics.json]\n{body}")  # what a finished toy run holds
    return p


def _alive(pid: int) -> bool:
    try: os.kill(pid, 0)
    except ProcessLookupError: return False
    return True


def _ignore_sigint(): signal.signal(signal.SIGINT, signal.SIG_IGN)  # what a shell does to a command started with `&`


@pytest.mark.parametrize("sig,background", [(signal.SIGINT, False), (signal.SIGINT, True), (signal.SIGTERM, False)],
                         ids=["SIGINT", "SIGINT-background", "SIGTERM"])
def test_a_stopped_sweep_stops_its_runs_and_continues_when_run_again(tmp_path, sig, background):
    # two datasets share nothing, so both runs start at once
    grid = _grid(tmp_path, "base: {secs: 120}\ngrid: {dataset: [d1, d2]}\n")
    runs = [tmp_path / "runs" / "toy" / d / "a" / "p0.1-s0" for d in ("d1", "d2")]
    p = subprocess.Popen([*MLRPL, "sweep", str(grid), "-j", "2", "--results", str(tmp_path / "runs")],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=_ignore_sigint if background else None)
    deadline = time.monotonic() + 120
    while not all((r / "kernel.pid").is_file() for r in runs):
        assert p.poll() is None, p.stdout.read()
        assert time.monotonic() < deadline, "the runs did not start"
        time.sleep(0.2)
    p.send_signal(sig)
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 130, out
    assert "interrupted" in out
    state = json.loads((tmp_path / "runs" / "toy" / "sweep.json").read_text())
    assert state["state"] == "interrupted"
    assert [r["status"] for r in state["runs"]] == ["interrupted", "interrupted"]
    assert not any((r / "metrics.json").exists() for r in runs)
    pids = [int((r / "kernel.pid").read_text()) for r in runs]
    deadline = time.monotonic() + 20
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline: time.sleep(0.2)
    assert not any(_alive(pid) for pid in pids), "a stopped run left its kernel running"
    # the same sweep again, now quick: both runs finish, started with resume=True
    r = subprocess.run([*MLRPL, "sweep", str(grid), "-j", "2", "--results", str(tmp_path / "runs"), "--set", "secs=0"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert [json.loads((d / "metrics.json").read_text())["resume"] for d in runs] == [True, True]


def test_exit_statuses(tmp_path):
    grid = _grid(tmp_path, "variants: [{method: a}, {method: b, fail: true}]\n")
    r = subprocess.run([*MLRPL, "sweep", str(grid), "--results", str(tmp_path / "runs")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "1 of 2 runs" in r.stderr and "toy/b/p0.1-s0" in r.stderr
    assert "fails on purpose" in (tmp_path / "runs" / "toy" / "toy" / "b" / "p0.1-s0" / "papermill.log").read_text()
    r = subprocess.run([*MLRPL, "sweep", str(grid), "--set", "seeds=1"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "toy.yaml: --set sets 'seeds'" in r.stderr and "did you mean 'seed'" in r.stderr, r.stderr
    r = subprocess.run([*MLRPL, "sweep", str(grid), "--jobs-file", "x", "--dry-run"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "not allowed with" in r.stderr, r.stderr


def test_the_installed_console_script_runs_the_sweep_command():
    script = Path(sys.executable).parent / "mlrpl"  # installed with the package (`make venv`)
    r = subprocess.run([script, "sweep", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "usage: mlrpl sweep" in r.stdout and "--jobs-file" in r.stdout, r.stdout + r.stderr
