"""Peak memory of one call, measured in a fresh process (not the test suite's own peak)."""

from __future__ import annotations

import subprocess
import sys

# VmHWM is the high-water mark of *this* process image; getrusage's ru_maxrss would also count
# the forking parent's memory before exec (Linux keeps it across execve).
REPORT = ("\nfor line in open('/proc/self/status'):\n    if line.startswith('VmHWM:'):\n"
          "        print(int(line.split()[1]) // 1024)")


def peak_mib(code: str, *args: str, timeout: float = 120.0) -> int:
    """Run ``code`` (which must not raise) in a new interpreter; its peak resident MiB."""
    done = subprocess.run([sys.executable, "-c", code + REPORT, *args], capture_output=True,
                          text=True, timeout=timeout, check=True)
    return int(done.stdout.split()[-1])
