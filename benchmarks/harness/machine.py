"""The facts a figure depends on: kernel, CPU, Python, the loops' versions,
the aioring commit, and the tools' versions."""
import importlib.metadata
import os
import platform
import subprocess

from .build import REPO


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def package_version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def command_output(argv):
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=10)
        text = (proc.stdout or proc.stderr).decode(errors="replace").strip()
        return text.splitlines()[0] if text else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def aioring_commit():
    """The last commit that changed aioring/ (commits to benchmarks/ alone
    do not change what is measured), and whether aioring/ differs from it."""
    commit = command_output(["git", "-C", REPO, "log", "-1", "--format=%h", "--abbrev=12",
                             "--", "aioring"])
    dirty = command_output(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no",
                            "--", "aioring"])
    return f"{commit}{' (aioring/ modified)' if dirty else ''}" if commit else None


def machine_facts():
    return {
        "kernel": platform.release(),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "uvloop": package_version("uvloop"),
        "rloop": package_version("rloop"),
        "httptools": package_version("httptools"),
        "aioring_commit": aioring_commit(),
        "gcc": command_output(["gcc", "--version"]),
        "wrk": command_output(["wrk", "--version"]),
        "valgrind": command_output(["valgrind", "--version"]),
    }
