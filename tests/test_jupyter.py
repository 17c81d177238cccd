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


PROGRESS_CELL = ("from mlrpl.core import Progress\n"
                 "with Progress(400, 'counting', 'items') as bar:\n"
                 "    for i in range(400): bar.update(1, last=i)")


def _papermill(tmp_path, *engine):
    import nbformat
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(PROGRESS_CELL)]
    nbformat.write(nb, tmp_path / "in.ipynb")
    runtime = tmp_path / "runtime"
    p = subprocess.run([str(BIN / "papermill"), *engine, "-k", "python3", "--log-level", "WARNING", "--no-progress-bar",
                        str(tmp_path / "in.ipynb"), str(tmp_path / "out.ipynb")], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "JUPYTER_RUNTIME_DIR": str(runtime)})
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    return p.stdout + p.stderr, json.loads((tmp_path / "out.ipynb").read_text()), sorted(runtime.iterdir()) if runtime.exists() else []


def test_papermill_engine_mlrpl_runs_a_kernel_over_ipc_that_shuts_down_without_an_interrupt(tmp_path):
    log, nb, left = _papermill(tmp_path, "--engine", "mlrpl")
    assert "without encryption" not in log and "KeyboardInterrupt" not in log, log
    assert left == [], left  # the kernel's connection file and sockets are removed
    # the progress bar of a saved run notebook: one output, whose text is the final line
    (out,) = nb["cells"][0]["outputs"]
    assert out["output_type"] == "display_data" and "application/vnd.jupyter.widget-view+json" in out["data"], out
    assert "".join(out["data"]["text/plain"]).startswith("counting: 400/400 items in "), out


def test_papermill_own_engine_warns_of_tcp_the_control(tmp_path):
    log, _, _ = _papermill(tmp_path)
    assert "Kernel is running over TCP without encryption" in log, log


def test_progress_draws_a_bar_on_a_terminal_and_one_line_in_a_log(tmp_path):
    import pty
    code = PROGRESS_CELL + "\nimport time; time.sleep(0.2)"
    env = {k: v for k, v in os.environ.items() if k != "MLRPL_PROGRESS"}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0 and p.stderr == "" and p.stdout.count("\n") == 1, (p.stdout, p.stderr)  # a log: one line
    assert p.stdout.startswith("counting: 400/400 items in ") and p.stdout.rstrip().endswith("(last 399)"), p.stdout
    import fcntl, struct, termios
    pid, fd = pty.fork()
    if pid == 0:  # the child, on a terminal of 100 columns
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
        os.execve(sys.executable, [sys.executable, "-c", code], env)
    chunks = []
    while True:
        try: b = os.read(fd, 4096)
        except OSError: break
        if not b: break
        chunks.append(b)
    os.waitpid(pid, 0)
    shown = b"".join(chunks).decode(errors="replace")
    assert "\r" in shown and "100%" in shown and "400/400" in shown and "last=399" not in shown and "last 399" in shown, shown


def test_the_kernels_that_train_get_the_allocator_settings_and_a_users_own_win(tmp_path):
    import nbformat
    from mlrpl.kernels import ALLOCATOR_ENV
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import os; print({k: os.environ.get(k) for k in sorted(%r)})" % sorted(ALLOCATOR_ENV))]
    nbformat.write(nb, tmp_path / "in.ipynb")
    seen = []
    for mine in ({}, {"MALLOC_TRIM_THRESHOLD_": "1048576"}):
        env = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_ENV} | mine
        p = subprocess.run([str(BIN / "papermill"), "--engine", "mlrpl", "-k", "python3", "--log-level", "WARNING", "--no-progress-bar",
                            str(tmp_path / "in.ipynb"), str(tmp_path / "out.ipynb")], capture_output=True, text=True, timeout=300, env=env)
        assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
        seen.append("".join(json.loads((tmp_path / "out.ipynb").read_text())["cells"][0]["outputs"][0]["text"]).strip())
    assert seen[0] == str(dict(sorted(ALLOCATOR_ENV.items()))), seen
    assert seen[1] == str({"MALLOC_MMAP_THRESHOLD_": ALLOCATOR_ENV["MALLOC_MMAP_THRESHOLD_"], "MALLOC_TRIM_THRESHOLD_": "1048576"}), seen
