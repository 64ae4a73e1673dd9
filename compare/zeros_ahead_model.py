#!/usr/bin/env python3
"""A model of a `Durability::Sync` appender, without walq: where should the
zeros written ahead of the tail be written?

Each append is a `pwrite` of REC bytes plus an `fdatasync`, into a 64 MiB
`fallocate`d file whose first 2 MiB are written (as a prepared spare's
are). The next MiB of zeros is written ahead of the tail, either
`inline` (by the appender, before the append that needs it: what
`Log::zero_ahead` does), by a `helper` thread with its own descriptor and
its own `fdatasync` (the appender waits only if its record would land in
a MiB not yet zeroed), or `none` (no zeros: every append converts
extents). Prints the appender's latency quantiles and rate.

    python3 compare/zeros_ahead_model.py inline 65536 1000
    python3 compare/zeros_ahead_model.py helper 1024 15000

docs/benchmarks.md, "Rotation under Sync", has what it measured.
"""
import os, sys, time, threading
mode, rec_size, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
path = os.environ.get("ZEROS_MODEL_FILE", "/tmp/zeros_ahead_model.bin")
SEG = 64 << 20; MIB = 1 << 20
fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
os.posix_fallocate(fd, 0, SEG)
os.pwrite(fd, bytes(2 * MIB), 0); os.fsync(fd)
z = bytes(MIB); rec = b'x' * rec_size
lat = []; off = 0; zeroed = 2 * MIB
lock = threading.Lock(); cv = threading.Condition(lock); want = [None]; done = [2 * MIB]; stop = [False]
def helper():
    hfd = os.open(path, os.O_RDWR)
    while True:
        with cv:
            while want[0] is None and not stop[0]: cv.wait()
            if stop[0]: break
            at = want[0]; want[0] = None
        os.pwrite(hfd, z, at); os.fdatasync(hfd)
        with cv: done[0] = at + MIB; cv.notify_all()
    os.close(hfd)
if mode == "helper":
    th = threading.Thread(target=helper); th.start()
for i in range(n):
    if off + rec_size > SEG: break
    t = time.perf_counter()
    if mode == "inline" and off + rec_size + MIB > zeroed and zeroed < SEG:
        os.pwrite(fd, z, zeroed); zeroed += MIB
    if mode == "helper":
        with cv:
            if off + rec_size + MIB > zeroed and zeroed < SEG:
                want[0] = zeroed; zeroed += MIB; cv.notify_all()
            while done[0] < off + rec_size and done[0] < zeroed: cv.wait()  # fence
    os.pwrite(fd, rec, off); os.fdatasync(fd)
    lat.append(time.perf_counter() - t); off += rec_size
if mode == "helper":
    with cv: stop[0] = True; cv.notify_all()
    th.join()
os.close(fd); os.unlink(path)
lat.sort(); q = lambda p: lat[min(len(lat) - 1, int(len(lat) * p))] * 1e3
print(f"{mode:6} {rec_size:6} B n={len(lat)} median {q(.5):.3f} p99 {q(.99):.3f} p99.9 {q(.999):.3f} max {lat[-1]*1e3:.2f} ms, {len(lat)/sum(lat):.0f}/s")
