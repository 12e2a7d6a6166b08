"""How much memory this machine can spare: what evaluations and replay buffers size themselves
by before any work, so a size that cannot fit is one line, not an out-of-memory kill later."""

from __future__ import annotations

from pathlib import Path


def available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (None where there is none: then nothing is checked)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None
