"""Drives tests/clients/celery/tasks.py from the client side while a `celery -A tasks worker`
runs: add.delay(2, 2).get(), then 20 tasks in flight at once, each result checked, through the
rpc:// result backend. Prints one JSON summary line."""

import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "celery"))

from tasks import add  # noqa: E402

RESULT_TIMEOUT_SECONDS = 60


def main():
    started = time.monotonic()
    first = add.delay(2, 2).get(timeout=RESULT_TIMEOUT_SECONDS)
    if first != 4:
        print(f"FAIL: add(2, 2) returned {first!r}", file=sys.stderr)
        sys.exit(1)
    pending = [(i, add.delay(i, 1000)) for i in range(20)]
    results = [result.get(timeout=RESULT_TIMEOUT_SECONDS) for _i, result in pending]
    expected = [i + 1000 for i, _result in pending]
    if results != expected:
        print(f"FAIL: results {results} != {expected}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps({"ok": True, "add_2_2": first, "batch": len(results),
                      "seconds": round(time.monotonic() - started, 2)}), flush=True)


if __name__ == "__main__":
    main()
