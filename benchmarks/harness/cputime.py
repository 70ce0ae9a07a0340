"""A process's CPU time (user + system, all threads) from /proc/<pid>/stat,
in clock ticks, and the commands that save that line at the window's edges."""
import os
import shlex

TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def save_stat_command(pid, path):
    """A shell command (for loadgen's --on-start/--on-end) saving the line."""
    return f"cat /proc/{pid}/stat > {shlex.quote(path)}"


def ticks_in(stat_line):
    # fields after the command name, which is in parentheses and may hold spaces
    fields = stat_line.rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])   # fields 14 and 15 of stat(5)
    return utime + stime


def read_ticks(pid=None, path=None):
    with open(path or f"/proc/{pid}/stat") as f:
        return ticks_in(f.read())


def cpu_us_per_request(ticks_start, ticks_end, requests):
    if not requests:
        return None
    return (ticks_end - ticks_start) / TICKS_PER_SECOND * 1e6 / requests
