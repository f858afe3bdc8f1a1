"""System programs the dev stack needs (nginx, Prometheus), fetched by the project itself.

On Debian and its derivatives the packages come from the machine's own apt sources with
`apt-get download` and are unpacked with `dpkg -x` under ~/.cache/slipway/sysdeps/<name>/: no
daemon starts, nothing is installed system-wide, no root is needed (except for `apt-get update`
when the package lists are missing). `SLIPWAY_NGINX` / `SLIPWAY_PROMETHEUS` name a binary
explicitly. A binary on PATH is used only where apt cannot fetch the package (another
distribution), and only after it proves it runs: the Debian build is what the project is
tested with, and a system nginx may carry a packager's configuration we do not want to depend on.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..controlplane.assets import CACHE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SysDep:
    name: str
    packages: tuple[str, ...]
    binary: str  # relative to the unpacked root
    version_args: tuple[str, ...]
    min_version: tuple[int, ...]  # what a binary found on PATH must be at least

    @property
    def env_var(self) -> str:
        return f"SLIPWAY_{self.name.upper()}"


# nginx >= 1.19.5 for `-e` (the error log before the configuration is read).
NGINX = SysDep("nginx", ("nginx", "nginx-common"), "usr/sbin/nginx", ("-v",), (1, 19, 5))
PROMETHEUS = SysDep("prometheus", ("prometheus",), "usr/bin/prometheus", ("--version",), (2, 30))


def nginx() -> Path:
    return ensure(NGINX)


def prometheus() -> Path:
    return ensure(PROMETHEUS)


def cache_dir(dep: SysDep) -> Path:
    return CACHE / "sysdeps" / dep.name


def ensure(dep: SysDep) -> Path:
    """The binary's path: explicit override, else the cached package, else fetched now."""
    explicit = os.environ.get(dep.env_var)
    if explicit:
        path = Path(explicit)
        if not _version(path, dep):
            raise RuntimeError(f"{dep.env_var}={path} does not run")
        return path
    cached = cache_dir(dep) / "root" / dep.binary
    if cached.exists():
        return cached
    if shutil.which("apt-get") and shutil.which("dpkg"):
        return _fetch(dep)
    on_path = shutil.which(Path(dep.binary).name)
    if on_path and _fits(Path(on_path), dep):
        log.info("using %s from PATH (no apt here to fetch the Debian package)", on_path)
        return Path(on_path)
    raise RuntimeError(
        f"{dep.name} is needed by the dev stack: on Debian/Ubuntu it is fetched by itself; elsewhere install "
        f"{dep.name} (>= {'.'.join(map(str, dep.min_version))}) or set {dep.env_var} to its binary"
    )


def _fetch(dep: SysDep) -> Path:
    folder = cache_dir(dep)
    folder.mkdir(parents=True, exist_ok=True)
    root = folder / "root"
    with open(folder / ".lock", "w") as lock:  # one download even when two stacks start at once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (root / dep.binary).exists():
            return root / dep.binary
        debs = folder / "debs"
        shutil.rmtree(debs, ignore_errors=True)
        debs.mkdir()
        _download(dep.packages, debs)
        partial = Path(tempfile.mkdtemp(prefix="root.", dir=folder))
        for deb in sorted(debs.glob("*.deb")):
            subprocess.run(["dpkg", "-x", str(deb), str(partial)], check=True, capture_output=True)
        binary = partial / dep.binary
        if not _version(binary, dep):
            shutil.rmtree(partial, ignore_errors=True)
            raise RuntimeError(f"{binary} from {', '.join(dep.packages)} does not run on this machine")
        shutil.rmtree(root, ignore_errors=True)
        partial.rename(root)
        log.info("unpacked %s into %s", ", ".join(p.name for p in sorted(debs.glob("*.deb"))), root)
    return root / dep.binary


def _download(packages: tuple[str, ...], into: Path) -> None:
    command = ["apt-get", "download", *packages]
    first = subprocess.run(command, cwd=into, capture_output=True, text=True)
    if first.returncode == 0:
        return
    # Most often the package lists are missing (a fresh container): refresh them once and retry.
    if os.geteuid() != 0:
        raise RuntimeError(
            f"`apt-get download {' '.join(packages)}` failed ({first.stderr.strip()}); "
            "run `sudo apt-get update` once and try again"
        )
    log.info("apt-get download failed (%s); running apt-get update", first.stderr.strip().splitlines()[-1:])
    subprocess.run(["apt-get", "update"], capture_output=True, text=True, check=True)
    second = subprocess.run(command, cwd=into, capture_output=True, text=True)
    if second.returncode != 0:
        raise RuntimeError(f"`apt-get download {' '.join(packages)}` failed: {second.stderr.strip()}")


def _version(binary: Path, dep: SysDep) -> tuple[int, ...] | None:
    """The version the binary reports, or None when it does not run."""
    try:
        result = subprocess.run([str(binary), *dep.version_args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None
    match = re.search(r"(\d+)\.(\d+)\.(\d+)", result.stdout + result.stderr)
    return tuple(int(part) for part in match.groups()) if match else None


def _fits(binary: Path, dep: SysDep) -> bool:
    version = _version(binary, dep)
    return version is not None and version >= dep.min_version
