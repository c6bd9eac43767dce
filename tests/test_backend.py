"""Importing compsde never changes the user's matplotlib backend (only entry points pick Agg)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import importlib, pkgutil
import matplotlib
matplotlib.use("svg")
import compsde
names = [m.name for m in pkgutil.walk_packages(compsde.__path__, "compsde.")
         if not m.name.endswith("__main__")]
for name in names:
    importlib.import_module(name)
print(len(names), matplotlib.get_backend())
"""


def test_importing_every_module_leaves_the_backend_unchanged():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=300, check=True)
    count, backend = done.stdout.split()
    assert int(count) > 50
    assert backend == "svg"
