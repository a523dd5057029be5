"""The old design's agent image, `warmwire-bench/old-agent:<hash>`, built when missing.

Same base image as warmwire's agent (the local `warmwire/base`), same runner sources and
locked wheels, but the wheels are installed and the runner compiled at every start
(image/entry.sh). Its own repository name, so nothing here touches warmwire's tags, and
it is never removed by the benchmark (a later run reuses it).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

from images import build

REPOSITORY = "warmwire-bench/old-agent"
CONTEXT = Path(__file__).resolve().parent / "image"
HASH_CHARS = 16
BUILD_TIMEOUT = 600


class ImageUnavailable(RuntimeError):
    """No engine, or no local base image to build on."""


def _docker(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


def base_image() -> str:
    """warmwire's own base (build.base_tag()), else the newest local warmwire/base."""
    wanted = build.base_tag()
    if _docker("image", "inspect", wanted).returncode == 0:
        return wanted
    found = _docker("images", build.BASE_REPO, "--format", "{{.Repository}}:{{.Tag}}")
    tags = [line for line in found.stdout.split() if line and not line.endswith(":<none>")]
    if not tags:
        raise ImageUnavailable(f"no {build.BASE_REPO} image here: build warmwire's with ./run.sh image")
    return tags[0]


def _inputs(wheels: list[Path]) -> dict[str, Path]:
    staged = {name: src for name, src in build.AGENT_SOURCES.items() if name != "Dockerfile"}
    staged.update({"Dockerfile": CONTEXT / "Dockerfile", "entry.sh": CONTEXT / "entry.sh"})
    staged.update({f"wheels/{wheel.name}": wheel for wheel in wheels})
    return staged


def ensure(log=print) -> str:
    """The image's tag, building it first when this engine does not have it."""
    if _docker("version", "--format", "{{.Server.Version}}").returncode != 0:
        raise ImageUnavailable("no Docker engine answers")
    base = base_image()
    wheels = build.ensure_wheels(build.DEFAULT_CACHE, build.Progress(quiet=True))
    inputs = _inputs(wheels)
    digest = hashlib.sha256(base.encode())
    for name, src in sorted(inputs.items()):
        digest.update(name.encode() + b"\0" + src.read_bytes())
    tag = f"{REPOSITORY}:{digest.hexdigest()[:HASH_CHARS]}"
    if _docker("image", "inspect", tag).returncode == 0:
        return tag
    log(f"building the old design's agent image {tag} on {base}")
    with tempfile.TemporaryDirectory(prefix="ww-bench-old-image-") as folder:
        for name, src in inputs.items():
            (Path(folder) / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, Path(folder) / name)
        built = _docker("build", "-q", "--build-arg", f"BASE={base}", "--build-arg",
                        f"AGENT_UID={build.AGENT_UID}", "-t", tag, folder, timeout=BUILD_TIMEOUT)
    if built.returncode != 0:
        raise ImageUnavailable(f"could not build {tag}: {built.stderr.strip()[-500:]}")
    return tag
