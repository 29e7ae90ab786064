"""Run a command and write its own peak RSS (KiB) to a file: ``python peak_rss.py OUT -- CMD…``.

Linux's ``ru_maxrss`` of a child includes the memory of the process it was forked from (the high
water mark of the parent's address space is carried over at ``exec``), so a child forked straight
from a large test process reports that process's size. Forked from this small interpreter instead,
the command's own peak is what ``wait4`` reports. The exit status is the command's.
"""

import os
import subprocess
import sys


def main() -> int:
    out, separator, *command = sys.argv[1:]
    assert separator == "--", "usage: peak_rss.py OUT -- CMD..."
    proc = subprocess.Popen(command)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    with open(out, "w") as handle:
        handle.write(str(usage.ru_maxrss))
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
