"""What the Python benchmark helpers share: the median time of a call, an
exception as one line, the loop of a process serving blocks of runs."""
import json
import sys
import time

# A path that takes seconds a call (a transformer on the reference BLAS)
# stops early: the median of what ran in this many seconds, at least 3 calls.
BUDGET_S = 30.0


def median_ms(fn, runs, warm=2, budget_s=BUDGET_S):
    """Median milliseconds of `runs` calls of `fn`, after `warm` calls; fewer
    (at least 3, one warm-up) where they would take over `budget_s` seconds."""
    start = time.perf_counter()
    for i in range(warm):
        fn()
        if time.perf_counter() - start > budget_s / 4:
            break
    t = []
    start = time.perf_counter()
    for _ in range(runs):
        a = time.perf_counter()
        fn()
        t.append((time.perf_counter() - a) * 1000)
        if len(t) >= 3 and time.perf_counter() - start > budget_s:
            break
    t.sort()
    return t[len(t) // 2]


def why(e):
    """An exception as one line: its type and the first line of its message
    (which may be empty: a bare assert in an exporter's shape inference)."""
    first = (str(e).splitlines() or [""])[0][:200]
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def serve_blocks(run_block):
    """The loop of a process that stays loaded and runs blocks on request
    (the field benchmark's paired rounds): each stdin line N runs
    `run_block(N)` and prints what it returns (a dict) as one JSON line;
    "ready" answers once the caller is loaded; "quit" or the end of stdin
    ends the loop."""
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "quit":
            break
        if cmd == "ready":
            print(json.dumps({"ready": True}), flush=True)
            continue
        print(json.dumps(run_block(int(cmd))), flush=True)
