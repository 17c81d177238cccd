"""The test command: every notebook through nbdev_test, then pytest; closes on `N passed, N failed`."""
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

root = Path(__file__).resolve().parent.parent
bin_ = Path(sys.executable).parent


def notebooks() -> tuple[int, int]:
    "Run nbdev_test; each notebook counts as one test."
    p = subprocess.run([str(bin_ / "nbdev_test"), "--do_print", "--timing"], cwd=root, text=True,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    print(p.stdout)
    done = len(set(re.findall(r"- Completed (\S+?\.ipynb)", p.stdout)))  # two workers print: a line may hold two messages
    failed = 0
    if "nbdev Tests Failed On The Following Notebooks" in p.stdout:
        tail = p.stdout.split("nbdev Tests Failed On The Following Notebooks", 1)[1]
        failed = len(re.findall(r"^\t\S", tail, re.M))
    passed = done - failed  # a failed notebook is completed too
    if p.returncode != 0 and failed == 0: failed = 1  # nbdev_test itself broke
    return passed, failed


def pytests() -> tuple[int, int]:
    "Run pytest on tests/; counts from its JUnit report."
    with tempfile.TemporaryDirectory() as t:
        xml = Path(t) / "report.xml"
        p = subprocess.run([sys.executable, "-m", "pytest", "tests", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}"], cwd=root)
        if not xml.exists(): return 0, 1
        s = ET.parse(xml).getroot()
        s = s if s.tag == "testsuite" else s.find("testsuite")
        total, fail, err, skip = (int(s.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
        failed = fail + err + (1 if p.returncode not in (0, 1) and fail + err == 0 else 0)  # collection errors, no tests (5)
        return total - fail - err - skip, failed


if __name__ == "__main__":
    nb_pass, nb_fail = notebooks()
    py_pass, py_fail = pytests()
    print(f"notebooks: {nb_pass} passed, {nb_fail} failed; pytest: {py_pass} passed, {py_fail} failed")
    print(f"{nb_pass + py_pass} passed, {nb_fail + py_fail} failed")
    sys.exit(1 if nb_fail + py_fail or nb_pass + py_pass == 0 else 0)
