"""The shared harness's fast upstream, answering with a long stream of N content deltas.

`../shared/bench/fast_upstream.py` answers every request with 8 deltas, so a benchmark of
streamed deltas through the gateway mostly measures the per-request cost. This wrapper
imports that same server and replaces its answer with ``--deltas`` tokens ("Echo:" and then
" tok" N-2 times), so per-delta cost dominates. Everything else (wire format, chunking,
one send per SSE event, usage in the last chunk) is the shared server's own.

    python bench/long_upstream.py --deltas 256 --port 0      # prints READY <port>
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

SHARED_BENCH = Path(os.environ.get("SHARED_BENCH", Path(__file__).resolve().parents[2] / "shared" / "bench"))


def main() -> None:
    deltas = 256
    if "--deltas" in sys.argv:
        at = sys.argv.index("--deltas")
        deltas = int(sys.argv[at + 1])
        del sys.argv[at : at + 2]
    sys.path.insert(0, str(SHARED_BENCH))
    import fast_upstream

    fast_upstream.DELTAS = ["Echo", ":"] + [" tok"] * (deltas - 2)
    fast_upstream.ANSWER = "".join(fast_upstream.DELTAS)
    fast_upstream.COMPLETION_TOKENS = deltas
    fast_upstream.main()


if __name__ == "__main__":
    main()
