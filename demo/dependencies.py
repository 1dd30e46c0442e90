"""Print the requirements ``make demo`` installs: headrace's dependencies, one per line.

``python demo/dependencies.py [EXTRA ...]`` adds the named extras' requirements (``redis``).
The list is read from pyproject.toml, so there is one list to keep. The demo imports headrace
itself from ``src/`` (``demo/run.sh`` puts it on ``PYTHONPATH``), so nothing is built: a fresh
clone installs in seconds, without the test and lint toolchain of ``make install``.
"""

import sys
import tomllib
from pathlib import Path

project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"]
wanted = list(project["dependencies"])
for extra in sys.argv[1:]:
    wanted += [r for r in project["optional-dependencies"][extra] if not r.startswith("headrace")]
print("\n".join(wanted))
