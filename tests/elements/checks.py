"""What the element test scripts share: `check` prints one result line and
keeps the failures (a script ends with `1 if failures else 0`), and
`proc_status_kb` reads a field of /proc/self/status (VmRSS, VmSize)."""

failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        failures.append(what)


def proc_status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError("no %s in /proc/self/status" % field)
