#!/usr/bin/env python3
"""Loading a model leaves no thread behind: ptminfer and ptmtrainsink load
on a thread that ends with the load, and so do ptminfer's live reloads.
A thread that has run LibTorch keeps an OpenMP team (num-threads - 1
workers) for as long as it lives, and such idle teams beyond the cores
make every team's threads sleep between parallel regions: the streaming
thread's forward pass ran ~25 % slower while the application's thread
(which changes the state, where start() loads) held one.

Counts this process's threads (/proc/self/task) before and after:
  - ptminfer share-model=false num-threads=2 going to PAUSED (the model
    loaded in start()) and back to NULL, twice;
  - a reload while PAUSED (model set to another file; its 'model-reload'
    message awaited), once the loader has finished;
  - ptmtrainsink num-threads=2 going to PAUSED;
  - ptminfer with a shared model (share-model, the default): the
    instance's forward thread and its OpenMP team (num-threads threads in
    all, made while loading) and nothing else, while PAUSED; none after
    NULL.

    test_load_threads.py FIXTURES_DIR
"""
import os
import sys
import threading
import time

import gi

gi.require_version("Gst", "1.0")
from gi.repository import Gst  # noqa: E402

from checks import check, failures  # noqa: E402


def threads():
    return len(os.listdir("/proc/self/task"))


def settled(baseline, seconds=5.0):
    """The thread count, once it is back to `baseline` or `seconds` passed
    (threads that end take a moment to leave /proc)."""
    end = time.monotonic() + seconds
    n = threads()
    while n > baseline and time.monotonic() < end:
        time.sleep(0.05)
        n = threads()
    return n


def main():
    fixtures = sys.argv[1]
    Gst.init(None)
    a, b = fixtures + "/resnet18.pth", fixtures + "/mobilenet_v3_small.pth"
    # LibTorch's process-wide state first (its lazily made pools, if any),
    # from a thread of ours that has ended before the baseline is read.
    def warm_up():
        w = Gst.ElementFactory.make("ptminfer")
        w.set_property("model", b)
        w.set_state(Gst.State.PAUSED)
        w.set_state(Gst.State.NULL)
    t = threading.Thread(target=warm_up)
    t.start()
    t.join()
    baseline = settled(0, 0.5)

    e = Gst.ElementFactory.make("ptminfer")
    e.set_property("model", a)
    e.set_property("num-threads", 2)
    e.set_property("share-model", False)
    for i in range(2):
        check(e.set_state(Gst.State.PAUSED) == Gst.StateChangeReturn.SUCCESS, f"ptminfer to PAUSED ({i + 1})")
        n = settled(baseline)
        check(n == baseline, f"ptminfer loaded in start(): {n} threads, {baseline} before ({i + 1})")
        e.set_state(Gst.State.NULL)

    bus = Gst.Bus.new()
    e.set_bus(bus)
    e.set_state(Gst.State.PAUSED)
    e.set_property("model", b)  # a reload, by the loader thread
    m = bus.timed_pop_filtered(120 * Gst.SECOND, Gst.MessageType.ELEMENT)
    while m is not None and m.get_structure().get_name() != "model-reload":
        m = bus.timed_pop_filtered(120 * Gst.SECOND, Gst.MessageType.ELEMENT)
    check(m is not None and m.get_structure().get_value("success"), "the reload finished")
    n = settled(baseline)
    check(n == baseline, f"after a reload: {n} threads, {baseline} before")
    e.set_state(Gst.State.NULL)

    t = Gst.ElementFactory.make("ptmtrainsink")
    t.set_property("model", a)
    t.set_property("num-threads", 2)
    t.set_property("output", "/dev/null")
    t.set_state(Gst.State.PAUSED)  # ASYNC (a sink), but start() has loaded by now
    n = settled(baseline)
    check(n == baseline, f"ptmtrainsink loaded in start(): {n} threads, {baseline} before")
    t.set_state(Gst.State.NULL)

    s = Gst.ElementFactory.make("ptminfer")
    s.set_property("model", a)
    s.set_property("num-threads", 2)
    for i in range(2):
        check(s.set_state(Gst.State.PAUSED) == Gst.StateChangeReturn.SUCCESS, f"shared: to PAUSED ({i + 1})")
        n = settled(baseline + 2)
        check(n == baseline + 2, f"shared model loaded: {n} threads, {baseline} before + its forward thread "
              f"and its team's one worker ({i + 1})")
        s.set_state(Gst.State.NULL)
        n = settled(baseline)
        check(n == baseline, f"shared model released: {n} threads, {baseline} before ({i + 1})")
    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    print("no thread left behind by a load")
    return 0


if __name__ == "__main__":
    sys.exit(main())
