"""JupyterLab as a student meets it: the project's kernel, and a notebook saved through the Jupyter server stays clean."""
import copy
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
NOTEBOOKS = sorted(p for p in (ROOT / "nbs").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def test_every_notebook_opens_on_the_projects_kernel_which_is_this_venvs_python():
    from jupyter_client.kernelspec import KernelSpecManager
    spec = KernelSpecManager().get_kernel_spec("mlrpl")  # `make venv` installs it into the venv
    assert Path(spec.argv[0]).resolve() == Path(sys.executable).resolve() and spec.display_name == "mlrpl (.venv)"
    names = {p.relative_to(ROOT).as_posix(): json.loads(p.read_text())["metadata"]["kernelspec"]["name"] for p in NOTEBOOKS}
    assert set(names.values()) == {"mlrpl"}, {k: v for k, v in names.items() if v != "mlrpl"}


def test_make_lab_starts_jupyterlab_in_the_project_on_the_reading_order():
    out = subprocess.run(["make", "-s", "lab", "ARGS=--show-config"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert f".root_dir = '{ROOT}'" in out.stdout and ".default_url = '/lab/tree/nbs/index.ipynb'" in out.stdout, out.stdout


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


def _api(port, path, token, method="GET", body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/contents/{path}", method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r: return json.loads(r.read())


@pytest.fixture
def server(tmp_path):
    """The venv's Jupyter server (its own config: no hook passed here) over a copy of the project's settings and a
    notebook, started in that copy as `make lab` starts it in the project (the hook finds settings.ini from there)."""
    (tmp_path / "nbs").mkdir()
    shutil.copy(ROOT / "settings.ini", tmp_path / "settings.ini")
    shutil.copy(ROOT / "nbs" / "01_masking.ipynb", tmp_path / "nbs" / "01_masking.ipynb")
    port, token = _free_port(), "mlrpl-test"
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    p = subprocess.Popen([str(BIN / "jupyter"), "server", "--no-browser", f"--port={port}", f"--IdentityProvider.token={token}",
                          f"--ServerApp.root_dir={tmp_path}", *(["--allow-root"] if os.geteuid() == 0 else [])], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try: _api(port, "", token); break
            except OSError: time.sleep(0.2)
        else: raise TimeoutError("jupyter server did not answer in 60 s")
        yield tmp_path, port, token
    finally:
        p.terminate(); p.wait(timeout=30)


def _as_jupyterlab_saves(model):
    "What JupyterLab writes back on opening a notebook and saving it unchanged: the kernel's language_info and display name, cells' trust."
    nb = copy.deepcopy(model["content"])
    nb["metadata"]["kernelspec"]["display_name"] = "mlrpl (.venv)"
    nb["metadata"]["language_info"] = {"name": "python", "version": "3.11.7", "mimetype": "text/x-python", "file_extension": ".py",
                                       "codemirror_mode": {"name": "ipython", "version": 3}, "pygments_lexer": "ipython3",
                                       "nbconvert_exporter": "python"}
    for c in nb["cells"]:
        c["metadata"]["trusted"] = True
        if c["cell_type"] == "code": c["metadata"]["execution"] = {"iopub.status.idle": "2026-12-02T00:00:00.000000Z"}
    return {"type": "notebook", "format": "json", "content": nb}


def test_saving_a_notebook_in_jupyter_leaves_it_as_committed(server):
    """The venv's server cleans a project notebook as it saves it (nbdev's pre-save hook, settings.ini's
    jupyter_hooks): the file's bytes are the committed ones. The control: with the hook off in settings.ini, the same
    save rewrites the file, so the round trip does exercise the rewrite."""
    root, port, token = server
    f = root / "nbs" / "01_masking.ipynb"
    committed = f.read_bytes()
    model = _api(port, "nbs/01_masking.ipynb?content=1", token)
    _api(port, "nbs/01_masking.ipynb", token, "PUT", _as_jupyterlab_saves(model))
    assert f.read_bytes() == committed
    ini = root / "settings.ini"
    ini.write_text(ini.read_text().replace("jupyter_hooks = True", "jupyter_hooks = False"))
    _api(port, "nbs/01_masking.ipynb", token, "PUT", _as_jupyterlab_saves(model))
    assert f.read_bytes() != committed and b"language_info" in f.read_bytes()
