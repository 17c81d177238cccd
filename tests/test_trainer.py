"""Trainer behaviour that does not belong in a lesson: exact resume across the pseudo-label / blending start, and
2 processes under torchrun equal to 1 process with the same global batch."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mlrpl.fashionscenes import write_fashion_scenes
from mlrpl.trainer import Trainer, TrainConfig

sys.path.insert(0, str(Path(__file__).parent))
from _train_run import build  # noqa: E402


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return write_fashion_scenes(tmp_path_factory.mktemp("scenes"), n_train=96, n_val=32, source="digits")


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("method", ["sst", "hst", "sarb", "dsrb"])
def test_resume_after_epoch_2_equals_uninterrupted(method, scenes, tmp_path):
    cfg = TrainConfig(epochs=4, batch_size=16, lr=1e-2, progress=False, seed=3)  # pseudo labels from epoch 1
    m1, tr, te = build(method, scenes)
    full = Trainer(m1, tr, te, cfg, results_dir=tmp_path / "full").fit()
    m2, tr, te = build(method, scenes)
    Trainer(m2, tr, te, TrainConfig(**{**cfg.__dict__, "epochs": 2}), results_dir=tmp_path / "cut").fit()
    m3, tr, te = build(method, scenes)  # a fresh process would rebuild the model the same way
    resumed = Trainer(m3, tr, te, cfg, results_dir=tmp_path / "cut").fit(resume=True)
    assert resumed == full
    s1, s3 = _state(m1), _state(m3)
    assert s1.keys() == s3.keys() and all(torch.equal(s1[k], s3[k]) for k in s1)
    restored = {"hst": lambda m: m.prototype_mask.any(), "sarb": lambda m: m.prototype_mask.any(),
                "dsrb": lambda m: m.quadrants.counts.sum() > 0, "sst": lambda m: m.queue.filled.sum() > 0}
    assert restored[method](m3)  # prototypes / queues came back from the checkpoint
    hist = json.loads((tmp_path / "cut" / "history.json").read_text())
    assert [h["epoch"] for h in hist] == [0, 1, 2, 3]  # the finished epoch is not run again


def test_checkpoint_loads_weights_only(scenes, tmp_path):
    m, tr, te = build("hst", scenes)
    Trainer(m, tr, te, TrainConfig(epochs=2, batch_size=16, progress=False), results_dir=tmp_path).fit()
    st = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "history", "epoch", "config"} <= set(st)
    assert "theta_intra" in st["model"] and "prototypes" in st["model"]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


def _torchrun(*args, env):
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                           "--master_port", str(_free_port()), *map(str, args)], check=True, env=env, timeout=600)


def test_two_processes_equal_one(scenes, tmp_path):
    "In float64, so that the comparison holds on any CPU: the two runs differ only in the order of their sums."
    run = str(Path(__file__).parent / "_train_run.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["--data", str(scenes), "--method", "an", "--epochs", "2", "--float64"]
    subprocess.run([sys.executable, run, str(tmp_path / "one.json"), "--batch", "16", *common], check=True, env=env, timeout=600)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                    "--master_port", str(_free_port()), run, str(tmp_path / "two.json"), "--batch", "8", *common],
                   check=True, env=env, timeout=600)
    one, two = (json.loads((tmp_path / f).read_text()) for f in ("one.json", "two.json"))
    # Each step's gradient is one mean over 16 images here, the average of two 8-image means there (all-reduce):
    # the same sums (192-term dot products forward, 16 images x 16 positions per weight gradient) in another
    # order, a relative difference <= (192 + 256 + 2)·u = 5e-14 per step, through 12 Adam steps of lr 1e-2 (an
    # update of ~lr whatever the gradient's scale): weights within ~1e-13 of their scale. 1e-9 of each tensor's
    # scale leaves >= 1e3x; a real difference (another batch, a missed all-reduce) moves weights by ~lr = 1e-2.
    for k in one["weights"]:
        w1, w2 = np.array(one["weights"][k]), np.array(two["weights"][k])
        np.testing.assert_allclose(w2, w1, rtol=0, atol=1e-9*np.abs(w1).max(), err_msg=k)
    # both evaluate float32 logits (Trainer.predict) of weights equal to ~1e-12: the same logits, the same mAP
    assert one["summary"]["test_mAP_last"] == two["summary"]["test_mAP_last"]


def test_two_processes_train_a_method_whose_loss_reads_its_own_parameters(scenes, tmp_path):
    """HST's thresholds are read by its loss, not its forward: DDP wraps forward and loss, so their gradients are
    all-reduced once (wrapping the forward alone stopped the first step: 'marked ready twice')."""
    run = Path(__file__).parent / "_train_run.py"
    _torchrun(run, tmp_path / "two.json", "--batch", "8", "--data", scenes, "--method", "hst", "--known", "0.5",
              "--epochs", "2", env={**os.environ, "OMP_NUM_THREADS": "1"})
    two = json.loads((tmp_path / "two.json").read_text())
    assert np.isfinite(two["summary"]["test_mAP_last"]) and np.any(two["weights"]["prototype_mask"])  # prototypes were built
    assert two["weights"]["theta_intra"] != 1.0  # the thresholds learned (threshold_init 1.0)


@pytest.mark.parametrize("batch, val", [(8, 0.0), (9, 0.05)])
def test_the_feature_pass_over_two_processes_is_the_one_process_pass(batch, val, scenes, tmp_path):
    """In the training slice's order, whatever the shares: 91 images at batch 9 are 6 batches for rank 0 and 5 for
    rank 1, which must still gather as often. float64 features of the same weights: equal to their last bits."""
    fp, env = Path(__file__).parent / "_feature_pass.py", {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, fp, tmp_path / "one.pt", scenes, str(2*batch), str(val)], check=True, env=env, timeout=600)
    _torchrun(fp, tmp_path / "two.pt", scenes, batch, val, env=env)
    one, two = (torch.load(tmp_path / f) for f in ("one.pt", "two.pt"))
    assert len(one["features"]) == len(two["features"]) == one["slice"]
    torch.testing.assert_close(two["features"], one["features"], rtol=0, atol=1e-12)  # the same images in the same order
    assert torch.equal(two["partial"], one["partial"])


def test_scoring_the_test_split_leaves_training_alone(scenes):
    """Training draws from the global RNG (here a random flip of each training image, as RandomHorizontalFlip and
    the feature cache's flips do; dropout too), and a DataLoader draws its base seed from it: scoring the test
    split every epoch or every third must train the same weights, and give the same last-epoch result."""
    from torchvision import transforms as T
    from mlrpl.data import get_dataset
    results = []
    for every in (1, 3):
        model, _, test = build("an", scenes)
        tf = T.Compose([T.Resize(32), T.RandomHorizontalFlip(), T.ToTensor()])
        train = get_dataset("fashionscenes", scenes, "train", transform=tf, known_prop=0.5)
        torch.manual_seed(0)
        t = Trainer(model, train, test, TrainConfig(epochs=4, batch_size=16, lr=1e-2, val_fraction=0.0, test_every=every,
                                                    progress=False, checkpoint=False))
        t.fit()
        results.append((t, {k: v.clone() for k, v in model.state_dict().items()}))
    (a, wa), (b, wb) = results
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert [h["epoch"] for h in b.history if "test_mAP" in h] == [2, 3]  # every third epoch and the last
    assert a.history[-1]["test_mAP"] == b.history[-1]["test_mAP"]
