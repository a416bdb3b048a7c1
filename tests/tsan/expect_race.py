#!/usr/bin/env python3
"""Runs test-stress with race-on-purpose and passes only when
ThreadSanitizer reported a data race inside ptmoverlay and the program
exited with TSAN_OPTIONS' exitcode (66): the elements are instrumented and
a race fails the stress test.

    expect_race.py TEST_STRESS ARGS...
"""
import subprocess
import sys

p = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=240)
out = p.stdout
race = "WARNING: ThreadSanitizer: data race" in out
in_overlay = "gstptmoverlay.cpp" in out
print(out[-6000:])
print("exit %d; data race reported: %s; in gstptmoverlay.cpp: %s" % (p.returncode, race, in_overlay))
sys.exit(0 if p.returncode == 66 and race and in_overlay else 1)
