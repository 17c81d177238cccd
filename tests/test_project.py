"""The project's own wiring: dependencies declared once, README generated and naming the two commands."""
import configparser
import re
import subprocess
import sys
from pathlib import Path

import yaml

root = Path(__file__).resolve().parent.parent


def _settings():
    cfg = configparser.ConfigParser(delimiters=["="]); cfg.read(root / "settings.ini")
    return cfg["DEFAULT"]


def test_environment_yml_lists_the_settings_requirements():
    s = _settings()
    declared = s["requirements"].split() + s["dev_requirements"].split()
    env = yaml.safe_load((root / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert sorted(pip) == sorted(declared)


def test_cleaning_keeps_papermill_tags_and_the_tests_skip_notest_cells(tmp_path):
    import json
    cells = [dict(cell_type="code", id="a1", metadata=dict(tags=["parameters"], collapsed=True), execution_count=3, outputs=[],
                  source="x = 1"),
             dict(cell_type="code", id="b2", metadata={}, execution_count=None, outputs=[], source="#| notest\nraise SystemExit('ran')")]
    nb = tmp_path / "t.ipynb"
    nb.write_text(json.dumps(dict(cells=cells, metadata={}, nbformat=4, nbformat_minor=5)))
    bin_ = Path(sys.executable).parent
    r = subprocess.run([bin_ / "nbdev_clean", "--fname", nb], cwd=root, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    meta = json.loads(nb.read_text())["cells"][0]["metadata"]
    assert meta == {"tags": ["parameters"]}  # papermill's tag kept, the rest cleaned
    r = subprocess.run([bin_ / "nbdev_test", "--path", nb, "--do_print"], cwd=root, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr  # the #| notest cell did not run


def test_readme_is_generated_from_index():
    r = subprocess.run([sys.executable, str(root / ".ci" / "readme.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_readme_gives_the_two_commands_and_ci_runs_the_test_one():
    readme = (root / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", readme, re.S)
    commands = [l.strip() for b in blocks for l in b.splitlines() if l.strip().startswith("make ")]
    assert commands[:2] == ["make reproduce", "make test"]
    ci = (root / ".ci" / "run").read_text().splitlines()
    assert "make test" in [l.strip() for l in ci]


def test_library_notebooks_have_no_outputs():
    import json
    for nb in sorted((root / "nbs").glob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        assert not any(c.get("outputs") for c in cells if c["cell_type"] == "code"), nb.name


def test_every_run_parameter_has_papermill_help():
    "papermill --help-notebook lists every parameter of the run notebook with its help comment."
    import ast
    import papermill
    from mlrpl.run import parameters_cell
    nb, _, cell = parameters_cell(root / "nbs" / "experiments" / "train.ipynb")
    names = [n.target.id for n in ast.parse("".join(cell["source"])).body if isinstance(n, ast.AnnAssign)]
    inferred = papermill.inspect_notebook(str(nb))
    assert sorted(inferred) == sorted(names)
    assert all(inferred[n]["help"] for n in names), [n for n in names if not inferred[n]["help"]]


def test_every_plugin_is_registered_the_first_time_a_registry_is_read():
    "Plugins register themselves where they are defined; a registry's first read imports them (mlrpl.load_plugins); importing tables and figures does not."
    code = ("import json, sys; import mlrpl.tables, mlrpl.figures; assert 'torch' not in sys.modules, 'rendering imported torch'; "
            "from mlrpl.methods import METHODS; from mlrpl.data import AUGMENTATIONS, DATASETS; from mlrpl.backbones import BACKBONES; "
            "assert 'mlrpl.clsl' not in sys.modules, 'a plugin imported before a name was read'; "
            "names = [r.available() for r in (METHODS, DATASETS, BACKBONES, AUGMENTATIONS)]; assert 'mlrpl.clsl' in sys.modules; "
            "print(json.dumps(names))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd="/")
    assert out.returncode == 0, out.stderr
    import json
    methods, datasets, backbones, augmentations = json.loads(out.stdout)
    assert {"sarb", "dsrb", "clsl", "hst"} <= set(methods) and {"fashionscenes", "coco2014"} <= set(datasets)
    assert {"garmentnet", "clip_rn101", "resnet101"} <= set(backbones) and augmentations == ["clsl", "flip", "hcp"]


def _floors() -> dict[str, int]:
    "Module → floor, from the README's table of the house (a room's name in backticks, its floor's number)."
    readme = (root / "README.md").read_text()
    table = readme[readme.index("| floor | rooms |"):].split("\n\n")[0]
    floors = {}
    for row in table.splitlines()[2:]:
        n, rooms = [c.strip() for c in row.strip("|").split("|")]
        for name in re.findall(r"`([a-z_]+)`", rooms): floors[name] = int(n)
    return floors


def test_every_module_is_on_a_floor_and_imports_only_from_its_floor_or_below():
    import ast
    floors, up = _floors(), []
    modules = sorted(p.stem for p in (root / "mlrpl").glob("*.py") if not p.stem.startswith("_"))
    assert sorted(set(modules) - set(floors)) == [], "modules the README's house does not place"
    assert sorted(set(floors) - set(modules)) == [], "rooms the README's house names that are no module"
    for m in modules:
        for node in ast.walk(ast.parse((root / "mlrpl" / f"{m}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                name = node.module.removeprefix("mlrpl.") if node.module.startswith("mlrpl.") else node.module if node.level else None
                if name in floors and floors[name] > floors[m]: up.append(f"{m} (floor {floors[m]}) imports {name} (floor {floors[name]})")
    assert up == []
