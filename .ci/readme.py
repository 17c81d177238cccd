"""Write README.md from nbs/index.ipynb: markdown cells as they are, code cells (not `#| hide`) as Python blocks."""
import json
import sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent


def render(nb_path: Path) -> str:
    cells = json.loads(nb_path.read_text())["cells"]
    parts = []
    for c in cells:
        src = "".join(c["source"]).strip()
        if not src: continue
        if c["cell_type"] == "markdown": parts.append(src)
        elif c["cell_type"] == "code":
            lines = src.splitlines()
            if any(l.strip() in ("#| hide", "#|hide") for l in lines): continue
            code = "\n".join(l for l in lines if not l.startswith("#|"))
            if code.strip(): parts.append(f"```python\n{code}\n```")
    return "<!-- generated from nbs/index.ipynb by `make export`; edit the notebook -->\n\n" + "\n\n".join(parts) + "\n"


if __name__ == "__main__":
    out = render(root / "nbs" / "index.ipynb")
    if "--check" in sys.argv:
        sys.exit(0 if (root / "README.md").read_text() == out else "README.md is out of date: run `make export`")
    (root / "README.md").write_text(out)
