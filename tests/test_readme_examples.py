"""The README's examples of one run, typed as written: each is the main table's run it says it is, and each runs
(with the test suite's smoke parameters appended, so that it takes seconds and needs no Fashion-MNIST)."""
import dataclasses
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from mlrpl.run import SMOKE, RunConfig
from mlrpl.grid import expand

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
README = (ROOT / "README.md").read_text()


def _blocks(lang):
    return re.findall(rf"```{lang}\n(.*?)```", README, re.S)


def _papermill_commands():
    "Each papermill command of a bash block, continuation lines joined."
    out = []
    for b in _blocks("bash"):
        for cmd in b.replace("\\\n", " ").splitlines():
            if cmd.strip().startswith(".venv/bin/papermill") and "nbs/experiments/train.ipynb" in cmd: out.append(shlex.split(cmd))
    return out


def _main_job(method):
    "The main table's run of `method` at 10 % known, seed 0: every value it runs with."
    (job,) = [j for j in expand(ROOT / "grids" / "main.yaml") if j.run == f"fashionscenes/{method}/p0.1-s0"]
    return _as_run({k: v for k, v in job.values.items() if k not in ("resume", "overwrite")})


def _given(argv):
    "The parameters a papermill command line gives (-p as YAML-ish literals, -r raw, -y YAML)."
    import yaml
    out, i = {}, 0
    while i < len(argv):
        if argv[i] in ("-p", "-r"):
            out[argv[i + 1]] = argv[i + 2] if argv[i] == "-r" else yaml.safe_load(argv[i + 2]); i += 3
        elif argv[i] == "-y": out.update(yaml.safe_load(argv[i + 1])); i += 2
        else: i += 1
    return out


def _as_run(params):
    return {k: v for k, v in dataclasses.asdict(RunConfig(**params)).items() if k != "results_dir"}


def test_the_readme_shows_a_laptop_run_and_the_papers_schedule_apart():
    cmds = _papermill_commands()
    assert len(cmds) == 2, cmds
    laptop, paper = (_given(c) for c in cmds)
    assert _as_run(laptop) == _main_job("sst")  # "gives the main table's SST run at 10 % known, seed 0"
    p = RunConfig(**paper)
    assert (p.backbone, p.pretrained, p.input_size, p.img_dim, p.epochs, p.batch_size, p.lr, p.test_every) == \
        ("efficientnet_lite0", "imagenet", 224, 1024, 20, 8, 1e-5, 1)
    assert "make reproduce FULL=1" in README


@pytest.mark.parametrize("which", [0, 1], ids=["laptop", "papers-schedule"])
def test_a_readme_papermill_command_runs_as_written(which, tmp_path):
    argv = _papermill_commands()[which]
    argv[0] = str(BIN / "papermill")
    nb = argv.index("nbs/experiments/train.ipynb")
    argv[nb], argv[nb + 1] = str(ROOT / argv[nb]), str(tmp_path / "out.ipynb")
    argv[argv.index("--cwd") + 1] = str(ROOT / "nbs" / "experiments")
    for k, v in {**SMOKE, "results_dir": str(tmp_path / "run")}.items():  # later values win
        argv += ["-r", k, v] if isinstance(v, str) else ["-p", k, repr(v)]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "MLRPL_DATA": str(tmp_path / "data"), "MLRPL_RESULTS": str(tmp_path / "results")})
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "without encryption" not in p.stderr and "KeyboardInterrupt" not in p.stderr, p.stderr[-3000:]
    params = json.loads((tmp_path / "run" / "params.json").read_text())
    assert params["method"] == "sst" and (tmp_path / "run" / "metrics.json").is_file()
    if which == 0: assert params["options"] == {"pseudo_start": 5, "margin_start": 0.75, "margin_floor": 0.6}


def test_the_readme_python_example_is_the_main_tables_hst_run_and_runs(tmp_path, monkeypatch):
    import mlrpl.run as R
    (code,) = [b for b in _blocks("python") if "from mlrpl.run import RunConfig, run" in b]
    real, seen = R.run, []
    def smoke(cfg, **kw):
        seen.append(cfg)
        return real(dataclasses.replace(cfg, **SMOKE, results_dir=str(tmp_path / "run")), progress=False, **kw)
    monkeypatch.setattr(R, "run", smoke)
    monkeypatch.setenv("MLRPL_DATA", str(tmp_path / "data"))
    exec(code, {})
    (cfg,) = seen
    assert {k: v for k, v in dataclasses.asdict(cfg).items() if k != "results_dir"} == _main_job("hst")
    assert (tmp_path / "run" / "metrics.json").is_file()
