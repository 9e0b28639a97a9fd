"""Run the benchmarks: `python -m bench` runs every `bench/*.py` module that has a `main()`;
`python -m bench NAME [NAME ...]` runs those (e.g. `python -m bench latency`)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def available() -> list[str]:
    here = Path(__file__).resolve().parent
    return sorted(m.name for m in pkgutil.iter_modules([str(here)]) if not m.name.startswith("_"))


def main(argv: list[str]) -> int:
    names = argv or available()
    unknown = sorted(set(names) - set(available()))
    if unknown:
        print(f"no benchmark {unknown}; there are {available()}", file=sys.stderr)
        return 2
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        if callable(getattr(module, "main", None)):
            print(f"== bench.{name}", flush=True)
            module.main()
        elif argv:
            print(f"bench.{name} has no main()", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
