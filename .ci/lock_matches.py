"""Exit 1 unless the running environment holds exactly the packages requirements.lock pins (the kit's
own editable install and pip itself aside): what CI tests is then what a fresh clone installs."""

import re
import sys
from importlib import metadata


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


locked = {canonical(m[1]): m[2] for m in re.finditer(r"^([A-Za-z0-9_.-]+)==([^\s\\;]+)", open(sys.argv[1]).read(), re.M)}
installed = {canonical(d.metadata["Name"]): d.version for d in metadata.distributions()}
installed = {k: v for k, v in installed.items() if k not in ("pip", "rslad-kit")}
problems = [f"{name}: locked {locked[name]}, installed {installed.get(name, 'nothing')}"
            for name in sorted(locked) if installed.get(name) != locked[name]]
problems += [f"{name} {version} is installed but not in the lock" for name, version in sorted(installed.items())
             if name not in locked]
for line in problems:
    print(f"lock mismatch: {line}", file=sys.stderr)
print(f"{len(locked)} locked packages, {len(installed)} installed: " + ("match" if not problems else "MISMATCH"))
sys.exit(1 if problems else 0)
