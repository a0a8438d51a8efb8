"""A process's CPU time and peak resident memory, from the kernel (Linux)."""
import ctypes
import os
import time

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """User + system CPU seconds the process (all its threads, live or ended)
    has used so far, to the nanosecond: its CPU-time clock, which Linux lets
    any process read (clock_getcpuclockid(3); the id is the kernel's
    MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)). /proc/PID/stat counts in
    clock ticks (10 ms), too coarse for a figure of a few µs per record: 11 s
    of a producer at 1,000 tweets/s is ~11 ticks. That is the fallback."""
    try:
        return time.clock_gettime(ctypes.c_int32(((~pid) << 3) | 2).value)
    except OSError:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK


def peak_rss_mib(pid):
    """The process's peak resident set size (VmHWM), in MiB."""
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")
