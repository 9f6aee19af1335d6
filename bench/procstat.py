# SPDX-License-Identifier: MIT
"""What the benchmarks read from /proc: a process's CPU time and memory,
the machine and its load."""
import os

CLK = os.sysconf('SC_CLK_TCK')


def cpu_s(pid):
    """utime + stime of pid in seconds (what getrusage would say); 0 when
    it is gone."""
    try:
        with open('/proc/%d/stat' % pid) as f:
            fields = f.read().rsplit(')', 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK


def status(pid, key):
    """A kB value of /proc/PID/status (VmRSS, VmHWM); 0 when it is gone."""
    try:
        with open('/proc/%d/status' % pid) as f:
            for line in f:
                if line.startswith(key + ':'):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def load():
    return ' '.join(open('/proc/loadavg').read().split()[:3])


def machine():
    model = '?'
    with open('/proc/cpuinfo') as f:
        for line in f:
            if line.startswith('model name'):
                model = line.split(':', 1)[1].strip()
                break
    return 'nproc %d, %s, load average %s' % (os.cpu_count(), model, load())
