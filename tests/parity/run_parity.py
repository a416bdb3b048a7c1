#!/usr/bin/env python3
"""Parity against torchvision or timm for every architecture, in batches.

Every architecture's fixture at once would take ~15 GB of disk (vit_h_14
and regnet_y_128gf alone 1.3 GB each): the fixture script's architectures
are made one at a time into WORK, and whenever the files there pass
--batch-mb, test-parity runs over them and they are deleted before the next
ones are made. The last run checks that every architecture of the registry
from this source was covered (Parity.EveryArchitectureIsCovered). Prints
test-parity's output as it comes and closes with "N passed, M failed,
K skipped"; exits 1 when anything failed.

Run with the fixture script's Python (Debian's for torchvision, one with
timm for timm):
    run_parity.py --source torchvision|timm --test BUILD/tests/test-parity --work DIR
                  [--skip NAME,...] [--only NAME,...] [--batch-mb N]
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))


def files_size(d):
    return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))


class Runner:
    def __init__(self, test, work, base):
        self.test, self.work, self.base = test, work, base
        self.passed = self.failed = self.skipped = 0
        self.batches = 0
        self.seconds = 0.0  # in test-parity
        # The reference BLAS the fixture scripts run with is theirs only:
        # the test runs with the system's, as ptm does.
        ref = os.environ.get("PTM_REFERENCE_BLAS", "")
        self.env = dict(os.environ)
        if ref:
            paths = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p and p != ref]
            self.env["LD_LIBRARY_PATH"] = ":".join(paths)

    def run(self, manifest, gtest_filter, what):
        with open(os.path.join(self.work, "manifest.json"), "w") as f:
            json.dump(dict(self.base, **manifest), f, indent=1)
        self.batches += 1
        print("[ batch %d ] %s" % (self.batches, what), flush=True)
        t0 = time.monotonic()
        p = subprocess.Popen([self.test, self.work, "--gtest_filter=" + gtest_filter], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, env=self.env)
        out = []
        for line in p.stdout:
            sys.stdout.write(line)
            out.append(line)
        sys.stdout.flush()
        rc = p.wait()
        self.seconds += time.monotonic() - t0
        text = "".join(out)
        counts = {}
        for key, pattern in (("passed", r"^\[  PASSED  \] (\d+) tests?"),
                             ("failed", r"^\[  FAILED  \] (\d+) tests?, listed below"),
                             ("skipped", r"^\[  SKIPPED \] (\d+) tests?")):
            m = re.search(pattern, text, re.M)
            counts[key] = int(m.group(1)) if m else 0
        if rc != 0 and counts["failed"] == 0:
            # Crashed (or killed) before its summary: the batch counts as one
            # failure, named.
            print("[ batch %d ] test-parity exited with %d before its summary (%s)" % (self.batches, rc, what),
                  flush=True)
            counts["failed"] = 1
        self.passed += counts["passed"]
        self.failed += counts["failed"]
        self.skipped += counts["skipped"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source", choices=("torchvision", "timm"), required=True)
    ap.add_argument("--test", required=True, help="the test-parity program")
    ap.add_argument("--work", required=True, help="folder for one batch's fixtures (emptied first)")
    ap.add_argument("--skip", default="", help="architectures left out (reported as skipped, with the reason)")
    ap.add_argument("--only", default="", help="these architectures only (the coverage check then skips)")
    ap.add_argument("--batch-mb", type=int, default=768,
                    help="test and delete the fixtures made so far once they pass this size")
    args = ap.parse_args()
    t0 = time.monotonic()

    import torch
    if args.source == "torchvision":
        import make_fixtures as maker
        names = maker.ARCHITECTURES + [maker.VIT_384]
    else:
        import make_timm_fixtures as maker
        names = list(maker.ARCHITECTURES)
    only = set(filter(None, args.only.split(",")))
    unknown = only - set(names)
    if unknown:
        raise SystemExit("--only: unknown architectures " + ", ".join(sorted(unknown)))
    if only:
        names = [n for n in names if n in only]
    skip = maker.parse_skip(args.skip)
    torch.set_num_threads(max(1, os.cpu_count() or 1))

    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)
    out = lambda name: os.path.join(args.work, name)
    import make_fixtures
    x = maker.parity_input(out, batch=make_fixtures.PARITY_BATCH)
    keep = set(os.listdir(args.work))  # the input batch stays for every batch
    base = {"source": args.source, "input": "input.f32", "input_shape": list(x.shape), "torch": torch.__version__,
            "only": args.only}
    runner = Runner(args.test, args.work, base)

    pending = {"models": [], "unavailable": []}
    covered = []

    def flush():
        if not pending["models"] and not pending["unavailable"]:
            return
        tests = [e.get("test", e["architecture"]) for e in pending["models"] + pending["unavailable"]]
        runner.run(pending, "-Parity.EveryArchitectureIsCovered", "%d fixtures, %.0f MB: %s" % (
            len(tests), files_size(args.work) / 1e6, ", ".join(tests)))
        for f in os.listdir(args.work):
            if f not in keep:
                os.remove(out(f))
        pending["models"], pending["unavailable"] = [], []

    for kind, entries in maker.parity_items(names, out, x, skip):
        pending[kind].extend(entries)
        covered.extend(e["architecture"] for e in entries)
        if files_size(args.work) >= args.batch_mb << 20:
            flush()
    flush()
    # Every architecture of the registry from this source made or reported.
    runner.run({"models": [], "unavailable": [], "covered": sorted(set(covered))},
               "Parity.EveryArchitectureIsCovered", "coverage of %d architectures" % len(set(covered)))
    shutil.rmtree(args.work, ignore_errors=True)
    total = time.monotonic() - t0
    print("parity over %d batches: %.0f s, of which making the fixtures %.0f s and test-parity %.0f s"
          % (runner.batches, total, total - runner.seconds, runner.seconds))
    print("%d passed, %d failed, %d skipped" % (runner.passed, runner.failed, runner.skipped))
    return 1 if runner.failed else 0


if __name__ == "__main__":
    sys.exit(main())
