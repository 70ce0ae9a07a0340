"""Compiling the C programs: the load generator and the C floor server
(linked with aioring's own ring layer, aioring/_ring/uring.c)."""
import os
import subprocess

from .targets import BENCH_DIR

REPO = os.path.dirname(BENCH_DIR)
C_DIR = os.path.join(BENCH_DIR, "c")
RING_DIR = os.path.join(REPO, "aioring", "_ring")

PROGRAMS = {
    "loadgen": [os.path.join(C_DIR, "loadgen.c")],
    "uring_echo": [os.path.join(C_DIR, "uring_echo.c"), os.path.join(RING_DIR, "uring.c")],
}


def build_c_programs(build_dir):
    os.makedirs(build_dir, exist_ok=True)
    for name, sources in PROGRAMS.items():
        argv = ["gcc", "-O2", "-g", "-Wall", "-Wextra", "-I", RING_DIR, "-o",
                os.path.join(build_dir, name), *sources]
        subprocess.run(argv, check=True)
    return build_dir
