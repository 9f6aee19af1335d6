#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Fails if the project's copy of the conformance data differs from the shared
data it was taken from: a file missing on either side or any byte different.
When the shared directory is absent (a clone without it), exits 77 (SKIP).
usage: test-conformance-copy.py COPY_DIR SHARED_DIR"""
import filecmp
import os
import sys

copy, shared = sys.argv[1], sys.argv[2]

if not os.path.isdir(shared):
    print("SKIP: %s does not exist beside this checkout; nothing to compare "
          "%s with" % (shared, copy))
    sys.exit(77)
if not os.path.isdir(copy):
    print("FAIL: %s is missing" % copy)
    sys.exit(1)


def differences(a, b, rel=""):
    """Yields one line per difference between trees a and b."""
    d = filecmp.dircmp(a, b, ignore=[])
    for name in sorted(d.left_only):
        yield "only in the copy: %s" % os.path.join(rel, name)
    for name in sorted(d.right_only):
        yield "missing from the copy: %s" % os.path.join(rel, name)
    for name in sorted(d.common_funny + d.common_files):
        pa, pb = os.path.join(a, name), os.path.join(b, name)
        if os.path.isdir(pa) != os.path.isdir(pb):
            yield "file in one, folder in the other: %s" % os.path.join(rel, name)
        elif not filecmp.cmp(pa, pb, shallow=False):
            yield "differs: %s" % os.path.join(rel, name)
    for name in sorted(d.common_dirs):
        yield from differences(os.path.join(a, name), os.path.join(b, name),
                               os.path.join(rel, name))


diff = list(differences(copy, shared))
for line in diff:
    print(line)
if diff:
    print("FAIL: %d difference(s) between %s and %s; refresh the copy with\n"
          "  cp -a %s/. %s/   (and remove files the shared data dropped)"
          % (len(diff), copy, shared, shared, copy))
    sys.exit(1)
print("ok: %s matches %s" % (copy, shared))
