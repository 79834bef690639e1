"""Run a module under cProfile in every thread, and write one merged statistics file.

``python bench/profile_threads.py OUT -m MODULE ARGS...``: like ``python -m cProfile -o OUT
-m MODULE ARGS...``, except that ``cProfile`` sees only the thread that started it, while
``run --once`` downloads on its own threads (``loop/archiver.py``) and streams each body
through the spool's helper threads (``download/spool.py``). Here each thread started with
``threading.Thread`` runs under a profiler of its own, and all of them, the main
thread's included, are merged into OUT when the program ends. Time spent waiting in one
thread is not CPU, so read ``tottime`` of the Python functions and C calls that work, not
of ``acquire`` and ``poll``.
"""

from __future__ import annotations

import atexit
import cProfile
import pstats
import runpy
import sys
import threading
import time
from typing import Any


def main() -> None:
    if len(sys.argv) < 4 or sys.argv[2] != "-m":
        sys.exit("usage: profile_threads.py OUT -m MODULE [ARGS...]")
    out, module = sys.argv[1], sys.argv[3]
    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()
    original_run = threading.Thread.run

    def profiled_run(self: threading.Thread) -> None:
        profile = cProfile.Profile(time.thread_time)
        with lock:
            profiles.append(profile)
        profile.enable()
        try:
            original_run(self)
        finally:
            profile.disable()

    threading.Thread.run = profiled_run  # type: ignore[method-assign]
    main_profile = cProfile.Profile(time.thread_time)

    def write() -> None:
        main_profile.disable()
        with lock:
            others = list(profiles)
        stats = pstats.Stats(main_profile)
        for profile in others:
            profile.disable()  # a daemon thread still running at exit
            try:
                stats.add(profile)
            except (TypeError, ValueError):  # a profile that never ran a function
                continue
        stats.dump_stats(out)

    atexit.register(write)
    sys.argv = [module, *sys.argv[4:]]
    main_profile.enable()
    code: Any = 0
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code
    sys.exit(code)


if __name__ == "__main__":
    main()
