#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""HACKING.md's layout table against the tree: every top-level folder and
every folder of src/ and tests/ that git tracks has a row (or a row below
it), and every row names a folder that exists. SKIP (77) outside a git
checkout. usage: test-layout.py SOURCE_ROOT"""
import os
import re
import subprocess
import sys

root = sys.argv[1]
try:
    files = subprocess.run(['git', '-C', root, 'ls-files'], capture_output=True, text=True,
                           check=True, timeout=30).stdout.split('\n')
except (OSError, subprocess.SubprocessError):
    print('SKIP: %s is not a git checkout; nothing to compare the table with' % root)
    sys.exit(77)

dirs = set()
for f in files:
    parts = f.split('/')[:-1]
    if not parts:
        continue
    if parts[0] in ('src', 'tests'):
        if len(parts) >= 2:
            dirs.add('/'.join(parts[:2]))
    else:
        dirs.add(parts[0])

with open(os.path.join(root, 'HACKING.md')) as f:
    text = f.read()
section = text.split('## Layout', 1)[1].split('\n## ', 1)[0]
rows = []
for line in section.splitlines():
    m = re.match(r'\|\s*((?:`[^`]+/`[,\s]*)+)\|', line)
    if m:
        rows += [p.rstrip('/') for p in re.findall(r'`([^`]+/)`', m.group(1))]

problems = []
for d in sorted(dirs):
    if not any(r == d or r.startswith(d + '/') for r in rows):
        problems.append('no row for %s/' % d)
for r in rows:
    if not os.path.isdir(os.path.join(root, r)):
        problems.append('a row for %s/, which does not exist' % r)
for p in problems:
    print(p)
if problems:
    print('FAIL: HACKING.md\'s layout table does not match the tree')
    sys.exit(1)
print('ok: %d rows cover %d folders' % (len(rows), len(dirs)))
