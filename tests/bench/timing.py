"""What the Python benchmark helpers share: the median time of a call."""
import time


def median_ms(fn, runs, warm=2):
    """Median milliseconds of `runs` calls of `fn`, after `warm` calls."""
    for _ in range(warm):
        fn()
    t = []
    for _ in range(runs):
        a = time.perf_counter()
        fn()
        t.append((time.perf_counter() - a) * 1000)
    t.sort()
    return t[len(t) // 2]
