#!/usr/bin/env python3
"""Prunes the shared cargo target folder, which outlives clones and only
grows: rustc's incremental sessions and the test binaries left behind each
time a dependency change gives a crate a new hash.

Per profile, entries are grouped by crate name (`NAME-HASH`); in each group
the newest entry stays, and so does every entry used within MAX_AGE (several
variants of one name are live at once: the `legion` library's tests, its
binary, the binary's tests). The rest go. Cargo rebuilds whatever it still
needs, so pruning can cost a rebuild, never a wrong result.
"""
import os
import re
import shutil
import sys
import time

MAX_AGE = 24 * 3600
NAME = re.compile(r"^(.+)-[0-9a-z]{13,16}$")


def prune(folder, want):
    groups = {}
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return
    for e in entries:
        m = NAME.match(e.name)
        if m and want(e):
            groups.setdefault(m.group(1), []).append(e)
    now = time.time()
    for items in groups.values():
        items.sort(key=lambda e: e.stat(follow_symlinks=False).st_mtime, reverse=True)
        for e in items[1:]:
            if now - e.stat(follow_symlinks=False).st_mtime < MAX_AGE:
                continue
            if e.is_dir(follow_symlinks=False):
                shutil.rmtree(e.path, ignore_errors=True)
            else:
                os.remove(e.path)
                dep = e.path + ".d"
                if os.path.exists(dep):
                    os.remove(dep)


def main(target):
    for profile in os.scandir(target):
        if not profile.is_dir():
            continue
        for base in (profile.path, os.path.join(profile.path, "wasm32-wasip2")):
            prune(os.path.join(base, "incremental"), lambda e: e.is_dir(follow_symlinks=False))
            # Test and binary executables only: no extension, executable.
            prune(
                os.path.join(base, "deps"),
                lambda e: e.is_file(follow_symlinks=False)
                and "." not in e.name
                and os.access(e.path, os.X_OK),
            )


# Below this much free space, every incremental session goes: they are
# only a cache (a rebuild without them costs minutes), and a full disk fails
# the tests that write images.
MIN_FREE = 25 << 30


def make_room(target):
    free = shutil.disk_usage(target).free
    if free >= MIN_FREE:
        return
    for profile in os.scandir(target):
        if not profile.is_dir():
            continue
        for base in (profile.path, os.path.join(profile.path, "wasm32-wasip2")):
            inc = os.path.join(base, "incremental")
            if os.path.isdir(inc):
                shutil.rmtree(inc, ignore_errors=True)
    print(
        f"prune-target: {free >> 30} GiB free, under {MIN_FREE >> 30}: incremental caches removed "
        f"({shutil.disk_usage(target).free >> 30} GiB free now)"
    )


if __name__ == "__main__":
    main(sys.argv[1])
    make_room(sys.argv[1])
