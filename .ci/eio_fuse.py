#!/usr/bin/env python3
"""A pass-through FUSE file system that fails chosen reads with EIO.

    eio_fuse.py <backing dir> <mount point> <control file>

Every operation goes to the same path under <backing dir>, except a read
that overlaps a range listed in <control file>: it fails with EIO, as a
bad sector would. The control file is read on every read call; each line
is `<file name> <start> <end>` (bytes, end exclusive), and an absent or
empty file injects nothing. Each injected failure is logged to stderr.

Used by `.ci/fs-matrix.sh` for `tests/read_errors.rs`: the kernel turns
a failed read of a mapped page into SIGBUS, which is what walq must not
let happen. The FUSE server is fusepy over libfuse2 (both installed by
the matrix script); it serves no direct I/O, so pages go through the
kernel's page cache and a map of a file faults them in through `read`.
"""

import errno
import os
import sys

from fuse import FUSE, FuseOSError, Operations


class EioPassthrough(Operations):
    def __init__(self, root, control):
        self.root = os.path.realpath(root)
        self.control = control

    def _full(self, path):
        return os.path.join(self.root, path.lstrip("/"))

    def _bad_ranges(self, name):
        try:
            with open(self.control) as f:
                lines = f.read().split("\n")
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            parts = line.split()
            if len(parts) == 3 and parts[0] == name:
                out.append((int(parts[1]), int(parts[2])))
        return out

    # Files and directories.
    def access(self, path, mode):
        if not os.access(self._full(path), mode):
            raise FuseOSError(errno.EACCES)

    def chmod(self, path, mode):
        os.chmod(self._full(path), mode)

    def chown(self, path, uid, gid):
        os.chown(self._full(path), uid, gid)

    def getattr(self, path, fh=None):
        st = os.lstat(self._full(path))
        keys = ("st_atime", "st_ctime", "st_gid", "st_mode", "st_mtime",
                "st_nlink", "st_size", "st_uid", "st_blocks")
        return {k: getattr(st, k) for k in keys}

    def readdir(self, path, fh):
        return [".", ".."] + os.listdir(self._full(path))

    def mkdir(self, path, mode):
        os.mkdir(self._full(path), mode)

    def rmdir(self, path):
        os.rmdir(self._full(path))

    def unlink(self, path):
        os.unlink(self._full(path))

    def rename(self, old, new):
        os.rename(self._full(old), self._full(new))

    def statfs(self, path):
        st = os.statvfs(self._full(path))
        keys = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail",
                "f_ffree", "f_files", "f_flag", "f_frsize", "f_namemax")
        return {k: getattr(st, k) for k in keys}

    def utimens(self, path, times=None):
        os.utime(self._full(path), times)

    # File contents.
    def open(self, path, flags):
        return os.open(self._full(path), flags)

    def create(self, path, mode, fi=None):
        return os.open(self._full(path), os.O_WRONLY | os.O_CREAT, mode)

    def read(self, path, size, offset, fh):
        name = os.path.basename(path)
        for start, end in self._bad_ranges(name):
            if offset < end and start < offset + size:
                print(f"eio_fuse: EIO for {name} {offset}+{size}", file=sys.stderr, flush=True)
                raise FuseOSError(errno.EIO)
        return os.pread(fh, size, offset)

    def write(self, path, data, offset, fh):
        return os.pwrite(fh, data, offset)

    def truncate(self, path, length, fh=None):
        os.truncate(self._full(path), length)

    def flush(self, path, fh):
        return 0

    def release(self, path, fh):
        os.close(fh)

    def fsync(self, path, datasync, fh):
        if datasync:
            os.fdatasync(fh)
        else:
            os.fsync(fh)

    def fsyncdir(self, path, datasync, fh):
        fd = os.open(self._full(path), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    backing, mount, control = sys.argv[1:]
    FUSE(EioPassthrough(backing, control), mount, foreground=True, nothreads=False)


if __name__ == "__main__":
    main()
