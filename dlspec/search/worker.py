"""One worker process of a search: `python -m dlspec.search.worker DIR INDEX` (started by
`dlspec search --workers N`; several machines start it, or `dlspec search --resume`, on a
shared `--storage`)."""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    from ..errors import DlspecError
    from .study import run_worker

    folder, index = Path(argv[0]), int(argv[1]) if len(argv) > 1 else 0
    try:
        run_worker(folder, index)
    except DlspecError as exc:
        for d in exc.diagnostics:
            sys.stderr.write(d.render() + "\n")
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
