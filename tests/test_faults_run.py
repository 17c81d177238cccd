"""Faults a user makes with one run, and what `mlrpl.run.run` does about them: a parameter of the wrong type or a
typo fails naming it, a run folder never holds two configurations' files, a finished run is never trained over,
a broken checkpoint is named, a full disk loses nothing, and metrics.json (the finished mark) comes last.
Tiny digits scenes, a random-init EfficientNet-Lite0 at 64 px, one epoch: seconds per run."""
import dataclasses
import errno
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import mlrpl.methods as M
import mlrpl.run as R
import mlrpl.trainer as T
from mlrpl.fashionscenes import write_fashion_scenes
from mlrpl.run import RunConfig, run

ROOT = Path(__file__).resolve().parent.parent
TRAIN_NB = ROOT / "nbs" / "experiments" / "train.ipynb"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    "A data root holding the digits scenes; the feature caches of every test go there too."
    root = tmp_path_factory.mktemp("data")
    write_fashion_scenes(root / "digits", n_train=48, n_val=24, source="digits")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLRPL_DATA", str(root))
        yield root


def config(folder, data, **kw) -> RunConfig:
    base = dict(data_root=str(data / "digits"), method="bce", backbone="efficientnet_lite0", pretrained="", input_size=64, img_dim=32, inter_dim=16,
                out_dim=32, epochs=1, batch_size=8, lr=1e-3, results_dir=str(folder))
    return RunConfig(**{**base, **kw})


def files(folder) -> dict:
    return {p.name: p.read_bytes() for p in Path(folder).iterdir() if p.is_file()}


# ---- 1. the thread count is part of the run

def test_threads_are_a_parameter_recorded_and_restored(data, tmp_path):
    torch.set_num_threads(2)
    try:
        run(config(tmp_path / "r", data, threads=1), progress=False)
        assert torch.get_num_threads() == 2  # what the caller had
    finally: torch.set_num_threads(1)
    params, env = (json.loads((tmp_path / "r" / f).read_text()) for f in ("params.json", "env.json"))
    assert params["threads"] == 1 and env["threads"] == 1
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert {"torch", "numpy", "mkl", "onednn", "deterministic", "device_name", "git_sha", "git_dirty"} <= set(env)
    caches = env["feature_caches"]  # the train and test caches read, by folder and key digest
    assert len(caches) == 2 and all(c["folder"].endswith(c["key_sha1"][:12]) for c in caches)
    assert all((data / "feature_cache" / c["folder"] / "cache.json").is_file() for c in caches)
    with pytest.raises(ValueError, match=r"threads must be >= 1, got 0"):
        config(tmp_path / "z", data, threads=0).check()


def test_the_same_run_twice_gives_the_same_numbers(data, tmp_path):
    a, b = (run(config(tmp_path / d, data, method="hst", options={"pseudo_start": 0}), progress=False) for d in "ab")
    assert a == b
    pa, pb = (np.load(tmp_path / d / "predictions.npz") for d in "ab")
    assert np.array_equal(pa["logits"], pb["logits"])
    assert (tmp_path / "a" / "metrics.json").read_bytes() == (tmp_path / "b" / "metrics.json").read_bytes()


# ---- 2. parameters as papermill and shells give them

def test_strings_and_numbers_are_coerced_by_annotation(data, tmp_path):
    c = RunConfig(use_cache="false", train_trunk="0", epochs="3", batch_size=8.0, lr="1e-3", known_prop=1, options='{"pseudo_start": 2}')
    assert (c.use_cache, c.train_trunk, c.epochs, c.batch_size, c.lr, c.known_prop) == (False, False, 3, 8, 1e-3, 1.0)
    assert type(c.epochs) is int and type(c.known_prop) is float and c.options == {"pseudo_start": 2}
    assert RunConfig(label=10).label == "10"  # papermill reads `-p label 10` as a number


@pytest.mark.parametrize("field, value, message", [
    ("epochs", "two", r"epochs takes an int \(a whole number\), got 'two'"),
    ("epochs", 1.5, r"epochs takes an int \(a whole number\), got 1.5"),
    ("epochs", True, r"epochs takes an int"),
    ("use_cache", "maybe", r"use_cache takes a bool \(true/false, yes/no, 1/0\), got 'maybe'"),
    ("known_prop", "a tenth", r"known_prop takes a float, got 'a tenth'"),
    ("lr", float("nan"), r"lr takes a float, got nan"),
    ("options", "pseudo_start=1", r"options takes a dict \(a JSON object .*\), got 'pseudo_start=1': not JSON"),
    ("options", "[1, 2]", r"options takes a dict"),
    ("pretrained", None, r"pretrained takes a str, got None"),
])
def test_a_value_of_the_wrong_type_names_its_parameter(field, value, message):
    with pytest.raises(TypeError, match=message):
        RunConfig(**{field: value})


def test_resume_and_overwrite_strings_are_not_truthy(data, tmp_path):
    c = config(tmp_path / "r", data)
    run(c, progress=False)
    with pytest.raises(FileExistsError, match="holds a run"):
        run(c, resume="false", progress=False)  # "false" was truthy: it resumed
    with pytest.raises(TypeError, match="overwrite takes a bool"):
        run(c, overwrite="sure", progress=False)


def test_a_misspelt_parameter_is_refused_with_a_suggestion(data, tmp_path):
    with pytest.raises(ValueError, match=r"unknown parameter epoch \(did you mean epochs\?\)"):
        run({**dataclasses.asdict(config(tmp_path / "r", data)), "epoch": 3})
    assert not (tmp_path / "r").exists()


def test_the_train_notebook_refuses_an_unknown_injected_parameter(tmp_path):
    "papermill only warns about a parameter the notebook lacks; `-p epoch 3` trained 1 epoch and exited 0."
    out = subprocess.run([str(Path(sys.executable).parent / "papermill"), str(TRAIN_NB), str(tmp_path / "out.ipynb"), "-k", "python3",
                          "--no-progress-bar", "-p", "epoch", "3", "-p", "results_dir", str(tmp_path / "r")],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "MLRPL_DATA": str(tmp_path)})
    assert out.returncode != 0
    assert "unknown parameter epoch (did you mean epochs?)" in out.stdout + out.stderr
    assert not (tmp_path / "r").exists()  # refused before any work


def test_the_train_notebook_parameters_are_the_run_config():
    from mlrpl.grid import notebook_parameters
    names = list(notebook_parameters(TRAIN_NB))
    assert sorted(names) == sorted([f.name for f in dataclasses.fields(RunConfig)] + ["resume", "overwrite"])


@pytest.mark.parametrize("options, error, message", [
    ({"num_classes": 5}, ValueError, r"option num_classes of method 'hst' is set by the run itself"),
    ({"adjacency": None}, ValueError, r"option adjacency of method 'hst' is set by the run itself"),
    ({"img_dim": 64}, ValueError, r"option img_dim of method 'hst' is set by the run itself"),
    ({"pseudo_strat": 1}, ValueError, r"method 'hst' has no option pseudo_strat \(did you mean pseudo_start\?\)"),
    ({"pseudo_start": "one"}, TypeError, r"option pseudo_start of method 'hst' takes an int"),
    ({"pseudo_start": 1.5}, TypeError, r"option pseudo_start of method 'hst' takes an int"),
    ({"official_sign": "perhaps"}, TypeError, r"option official_sign of method 'hst' takes a bool"),
])
def test_options_are_checked_against_the_method_config(options, error, message):
    with pytest.raises(error, match=message):
        RunConfig(method="hst", options=options).check()


@pytest.mark.parametrize("option", ["use_ilrb", "use_plrb", "ilrb_weight", "plrb_weight", "num_prototypes", "official_plrb_quirk", "kmeans_seed"])
def test_dsrb_refuses_the_sarb_options_it_would_ignore(option):
    "DSRB's config once inherited SARB's: a grid setting use_ilrb or plrb_weight for dsrb passed its check and did nothing."
    assert option in M.options("sarb")
    with pytest.raises(ValueError, match=rf"method 'dsrb' has no option {option}"):
        RunConfig(method="dsrb", options={option: 1}).check()


@pytest.mark.parametrize("options, message", [
    ({"num_heads": 3}, r"method 'clsl' cannot be built with options \{'num_heads': 3\}.*divisible"),
    ({"mlp_dropout": 1.5}, r"method 'clsl' cannot be built with options \{'mlp_dropout': 1.5\}.*dropout"),
])
def test_an_option_out_of_range_fails_before_the_feature_cache(options, message, tmp_path, monkeypatch):
    write_fashion_scenes(tmp_path / "digits", n_train=48, n_val=24, source="digits")
    monkeypatch.setenv("MLRPL_DATA", str(tmp_path))
    with pytest.raises(ValueError, match=message):
        run(config(tmp_path / "r", tmp_path, method="clsl", embeddings="minilm", options=options), progress=False)
    assert not (tmp_path / "feature_cache").exists() and not (tmp_path / "r").exists()


# ---- 3. CLSL on the smoke run (the train notebook under nbdev_test)

def test_clsl_trains_on_the_smoke_run(data, tmp_path):
    "86 training images in batches of 16: 5 steps, and OneCycle's warm-up (0.2 of them) peaked at step 0, dividing by zero."
    s = run({**R.SMOKE, "method": "clsl", "embeddings": "minilm", "results_dir": str(tmp_path / "clsl")}, progress=False)
    assert s["epochs"] == 1 and np.isfinite(s["test_mAP_last"])


def test_onecycle_with_a_one_step_warm_up_starts_at_its_peak(data):
    sys.path.insert(0, str(Path(__file__).parent))
    from _train_run import build
    m, tr, te = build("bce", data / "digits")
    t = T.Trainer(m, tr, te, T.TrainConfig(epochs=1, batch_size=9, lr=1e-3, val_fraction=0, scheduler="onecycle", optimizer="adamw",
                                           checkpoint=False, progress=False))
    assert t.steps_per_epoch() == 5 and t.cfg.pct_start*5 == 1
    lrs = []
    for _ in range(5): lrs.append(t.optimizer.param_groups[0]["lr"]); t.optimizer.step(); t.scheduler.step()
    assert lrs[0] == pytest.approx(1e-3) and lrs == sorted(lrs, reverse=True)


# ---- 4. a finished run is never overwritten or misfiled

def test_another_configuration_in_a_finished_folder_is_refused(data, tmp_path):
    run(config(tmp_path / "r", data, known_prop=0.5), progress=False)
    before = files(tmp_path / "r")
    for resume in (True, False):
        with pytest.raises(FileExistsError, match=r"r holds a run of another configuration \(known_prop=0.5 there, 0.1 now\)"):
            run(config(tmp_path / "r", data, known_prop=0.1), resume=resume, progress=False)
    assert files(tmp_path / "r") == before  # params.json, metrics.json, checkpoint.pt untouched
    s = run(config(tmp_path / "r", data, known_prop=0.1), overwrite=True, progress=False)
    assert json.loads((tmp_path / "r" / "params.json").read_text())["known_prop"] == 0.1
    assert json.loads((tmp_path / "r" / "metrics.json").read_text()) == s


def test_a_finished_run_is_returned_not_trained_again(data, tmp_path, capsys):
    c = config(tmp_path / "r", data)
    s = run(c, progress=False)
    before = files(tmp_path / "r")
    assert run(c, resume=True, progress=False) == s
    assert "finished run" in capsys.readouterr().out
    assert files(tmp_path / "r") == before
    with pytest.raises(FileExistsError, match=r"holds a run \(metrics.json, checkpoint.pt\): pass resume=True .* or overwrite=True"):
        run(c, progress=False)  # resume=False silently trained over it


def _finished_bce(data, folder) -> Path:
    run(config(folder, data), progress=False)
    return folder / "checkpoint.pt"


@pytest.mark.parametrize("change, message", [
    (dict(method="ssgrl"), r"checkpoint.pt holds a 'bce' model; this run trains 'ssgrl'"),
    (dict(img_dim=16), r"checkpoint.pt does not fit bce: 6 shape mismatches: \('backbone.change_channel.0.weight', \(16, 1280, 1, 1\), \(32, 1280, 1, 1\)\)"),
])
def test_a_checkpoint_that_does_not_fit_is_named_before_params_json(change, message, data, tmp_path):
    ck = _finished_bce(data, tmp_path / "bce")
    (tmp_path / "r").mkdir(); shutil.copy(ck, tmp_path / "r" / "checkpoint.pt")  # a checkpoint without its params.json
    with pytest.raises(ValueError, match=message):
        run(config(tmp_path / "r", data, **change), resume=True, progress=False)
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["checkpoint.pt"]  # params.json was rewritten, then torch failed


class _Payload:
    def __reduce__(self): return (os.system, ("touch payload-ran",))


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage", "pickle payload", "not a checkpoint"])
def test_a_damaged_checkpoint_is_named(damage, data, tmp_path, monkeypatch):
    ck = _finished_bce(data, tmp_path / "r")
    (tmp_path / "r" / "metrics.json").unlink()  # an interrupted run, so that resume reads the checkpoint
    b = ck.read_bytes()
    if damage == "truncated": ck.write_bytes(b[:len(b)//2])
    elif damage == "empty": ck.write_bytes(b"")
    elif damage == "garbage": ck.write_bytes(b"\x00not a zip" * 100)
    elif damage == "pickle payload": torch.save({"model": _Payload()}, ck)
    else: torch.save({"weights": torch.zeros(3)}, ck)
    monkeypatch.chdir(tmp_path)
    match = (r"checkpoint.pt is not a checkpoint of mlrpl's Trainer: it has no model, optimizer" if damage == "not a checkpoint"
             else r"checkpoint.pt is not a readable checkpoint \(\w+: .+\); delete it to start the run over")
    with pytest.raises(ValueError, match=match) as e:
        run(config(tmp_path / "r", data), resume=True, progress=False)
    assert str(ck) in str(e.value)
    assert not (tmp_path / "payload-ran").exists()  # weights_only: nothing in a data file is executed


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one(data, tmp_path, monkeypatch):
    c = config(tmp_path / "r", data, epochs=2)
    whole = run(dataclasses.replace(c, results_dir=str(tmp_path / "whole")), progress=False)
    save, calls = torch.save, []
    def full_disk(obj, f, *a, **kw):  # the second checkpoint: half written, then the disk is full
        calls.append(f)
        if len(calls) == 1: return save(obj, f, *a, **kw)
        buf = io.BytesIO(); save(obj, buf)
        Path(f).write_bytes(buf.getvalue()[:buf.tell()//2])
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match=r"writing .*r/checkpoint.pt after epoch 1 failed \(.*No space left on device\); the previous checkpoint is kept"):
        run(c, progress=False)
    monkeypatch.setattr(torch, "save", save)
    assert torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)["epoch"] == 0
    assert not list((tmp_path / "r").glob("*.tmp*")) and not (tmp_path / "r" / "metrics.json").exists()
    assert run(c, resume=True, progress=False) == whole  # resumed from epoch 0's checkpoint: nothing lost


# ---- 5. the finished mark comes last; splits that cannot train or score are refused

def test_metrics_json_is_written_last(data, tmp_path, monkeypatch):
    order = []
    def logged(write_atomic):
        def w(path, write): order.append(Path(path).name); return write_atomic(path, write)
        return w
    monkeypatch.setattr(R, "write_atomic", logged(R.write_atomic)); monkeypatch.setattr(T, "write_atomic", logged(T.write_atomic))
    run(config(tmp_path / "r", data), progress=False)
    assert order[-1] == "metrics.json" and order.count("metrics.json") == 1
    assert set(order) == {p.name for p in (tmp_path / "r").iterdir()} == set(R.RUN_FILES)  # every run file, each atomically


def test_a_failure_before_the_mark_leaves_no_metrics_and_resumes_without_training(data, tmp_path, monkeypatch):
    c = config(tmp_path / "r", data)
    def disk_full(*a, **kw): raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(R, "analysis", disk_full)
    with pytest.raises(OSError):
        run(c, progress=False)
    assert not (tmp_path / "r" / "metrics.json").exists() and not (tmp_path / "r" / "analysis.npz").exists()
    monkeypatch.undo()
    history = (tmp_path / "r" / "history.json").read_bytes()
    s = run(c, resume=True, progress=False)  # the last epoch's checkpoint: its files are completed, nothing is trained
    assert (tmp_path / "r" / "history.json").read_bytes() == history
    assert s == run(dataclasses.replace(c, results_dir=str(tmp_path / "whole")), progress=False)
    assert {"analysis.npz", "per_class.csv", "metrics.json"} <= {p.name for p in (tmp_path / "r").iterdir()}


def _edited_scenes(data, tmp_path, edit) -> Path:
    root = tmp_path / "scenes"
    shutil.copytree(data / "digits", root)
    f = root / "annotations" / "instances_val.json"
    d = json.loads(f.read_text()); edit(d); f.write_text(json.dumps(d))
    return root


def _no_positive(d): d["annotations"] = []
def _no_image(d): d["images"], d["annotations"] = [], []
def _other_classes(d):
    d["categories"] = d["categories"][:-1]
    d["annotations"] = [a for a in d["annotations"] if a["category_id"] in {c["id"] for c in d["categories"]}]


@pytest.mark.parametrize("edit, message", [  # the dataset reader may refuse the file first, naming it: as good
    (_no_image, r"dataset 'fashionscenes' \(.*scenes\): the test split has no images|instances_val.json lists no image"),
    (_no_positive, r"dataset 'fashionscenes' \(.*scenes\): no image of the test split has a positive label|"
                   r"instances_val.json hold no positive at all"),
    (_other_classes, r"the train split has 10 classes and the test split 9, not the same list \(only in train: \w+; only in test: none\)"),
])
def test_a_test_split_that_cannot_be_scored_is_refused_before_training(edit, message, data, tmp_path):
    root = _edited_scenes(data, tmp_path, edit)
    with pytest.raises(ValueError, match=message):
        run(dataclasses.replace(config(tmp_path / "r", data), data_root=str(root)), progress=False)
    assert not (tmp_path / "r").exists()  # no NaN metrics.json, no half run


class _Split(list):
    "A stand-in for a dataset: its images, class names and full labels."
    def __init__(self, labels, names=("a", "b")):
        super().__init__(range(len(labels))); self.labels, self.class_names = np.asarray(labels).reshape(-1, len(names)), list(names)


@pytest.mark.parametrize("train, test, message", [
    (_Split([[1, -1]]*20), _Split([]), r"dataset 'fashionscenes' \(its default folder\): the test split has no images"),
    (_Split([]), _Split([[1, -1]]*4), r"the train split has no images"),
    (_Split([[1, -1]]*20), _Split([[-1, -1]]*4), r"no image of the test split has a positive label, so its mAP is undefined"),
    (_Split([[1, -1]]*20), _Split([[1, -1]]*4, ("b", "a")), r"only in train: none; only in test: none; the same names in another order"),
])
def test_check_splits_names_the_split(train, test, message):
    with pytest.raises(ValueError, match=message):
        R.check_splits(RunConfig(batch_size=8), train, test)


def test_a_train_split_smaller_than_a_batch_after_the_hold_out_is_refused(data, tmp_path):
    with pytest.raises(ValueError, match=r"the train split's 48 images leave 24 for training after the validation hold-out "
                                         r"\(val_fraction=0.5\), fewer than one batch \(batch_size=32\)"):
        run(config(tmp_path / "r", data, val_fraction=0.5, batch_size=32), progress=False)
    assert not (tmp_path / "r").exists()


# ---- 6. held well: keep it so

@pytest.mark.parametrize("kw, message", [
    (dict(method="hst2"), r"unknown method 'hst2'; available:"),
    (dict(method="sst", options={"official_sign": True}), r"method 'sst' has no option official_sign"),
    (dict(known_prop=0), r"known_prop must be in \(0, 1\]"),
    (dict(known_prop=1.5), r"known_prop must be in \(0, 1\]"),
    (dict(dataset="imagenet"), r"unknown dataset 'imagenet'"),
])
def test_unknown_names_and_out_of_range_values_fail_in_check(kw, message):
    with pytest.raises(ValueError, match=message):
        RunConfig(**kw).check()


def test_a_mask_file_of_another_share_is_refused_before_the_run_is_filed(data, tmp_path):
    "With mask_scheme='file' the mask decides what is known, while known_prop names the folder and the table row."
    from mlrpl.data import get_dataset
    from mlrpl.masking import known_mask, save_mask
    c = config(tmp_path / "r", data)
    y = get_dataset(c.dataset, c.root()).labels
    f = save_mask(tmp_path / "m.npz", known_mask(y, 0.5), "entry", 0.5, 0)
    with pytest.raises(ValueError, match=r"m\.npz was made with known_prop=0\.5 \(its record\), but the run has known_prop=0\.1"):
        config(tmp_path / "r", data, mask_scheme="file", mask_file=str(f), known_prop=0.1).check()
    assert not (tmp_path / "r").exists()
    config(tmp_path / "r", data, mask_scheme="file", mask_file=str(f), known_prop=0.5).check()
    with pytest.raises(ValueError, match=r"mask_scheme='file' needs mask_file="):
        RunConfig(mask_scheme="file").check()
