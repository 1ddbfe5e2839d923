"""py-spy profiles of the server's workers over a measured window, and their summary."""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

from .processes import BIN, Processes, clean_env

SPY = BIN / "py-spy"


def summarise_profile(raw_files: list[Path], top: int = 25) -> dict[str, Any]:
    """Own and inclusive sample counts per function from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for path in raw_files:
        with contextlib.suppress(OSError):
            for line in path.read_text().splitlines():
                stack, _, count = line.rpartition(" ")
                if not stack or not count.isdigit():
                    continue
                samples = int(count)
                frames = [f for f in stack.split(";") if f]
                # the first frame may be the process/thread label py-spy adds
                frames = [f for f in frames if not f.startswith(("process ", "thread "))]
                if not frames:
                    continue
                total += samples
                own[frames[-1]] += samples
                for frame in set(frames):
                    inclusive[frame] += samples
    return {"samples": total,
            "own": [(f, n, 100 * n / total) for f, n in own.most_common(top)] if total else [],
            "inclusive": ([(f, n, 100 * n / total) for f, n in inclusive.most_common(top)]
                          if total else [])}


class Profilers:
    """One ``py-spy record`` per process, collapsed stacks (text) that flamegraph.pl,
    speedscope and inferno read."""

    def __init__(self, procs: Processes) -> None:
        self.procs = procs
        self._running: list[tuple[subprocess.Popen[bytes], Path]] = []

    @staticmethod
    def available() -> bool:
        return SPY.exists()

    def start(self, pids: list[int], out: Path, label: str, duration: float) -> None:
        out.mkdir(parents=True, exist_ok=True)
        seconds = str(max(1, int(duration) - 1))
        for pid in pids:
            target = out / f"{label}-{pid}.txt"
            command = [str(SPY), "record", "-p", str(pid), "-d", seconds, "-r", "200",
                       "--gil", "--function", "-f", "raw", "-o", str(target)]
            process = self.procs.start(command, env=clean_env(), log=out / f"{label}-{pid}.log")
            self._running.append((process, target))

    def stop(self) -> dict[str, Any] | None:
        """Wait for the recordings to end; their summary (None if none was started)."""
        running, self._running = self._running, []
        for process, _ in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=15)
            self.procs.stop(process, signal.SIGINT)
        if not running:
            return None
        targets = [target for _, target in running]
        return {"files": [str(t) for t in targets], **summarise_profile(targets)}
