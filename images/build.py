"""Build the warmwire images that are missing:  python -m images.build [--base IMAGE]

- base  `warmwire/base:<hash>`: Debian bookworm (debootstrap minbase + python3), imported
  with `docker import`, for machines that reach Debian's mirror but no image registry.
  Skipped when --base / WARMWIRE_IMAGE_BASE names another base (e.g. python:3.11-slim).
- agent `warmwire/agent:<hash>` (+ `:latest`): images/agent/Dockerfile on that base.

Tags are content hashes of the inputs (recipe, Dockerfile, runner sources, proto/ipc.py,
wheels, the base image's id), so a run with nothing changed only hashes a few files and asks
the engine two questions. The debootstrap tarball, .deb files and wheels are cached under
--cache, so a rebuild after `docker system prune` skips the slow downloads.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from supervisor.commands import lock as locked

REPO = Path(__file__).resolve().parent.parent
AGENT_DIR = REPO / "images" / "agent"
AGENT_SOURCES = {  # staged name -> source; proto/ipc.py is the one IPC implementation
    "Dockerfile": AGENT_DIR / "Dockerfile",
    "runner.py": AGENT_DIR / "runner.py",
    "agent.py": AGENT_DIR / "agent.py",
    "tools.py": AGENT_DIR / "tools.py",
    "proto/ipc.py": REPO / "proto" / "ipc.py",
}
RECIPE_VERSION = "1"  # bump to force new tags when the build steps here change
BASE_REPO = "warmwire/base"
AGENT_REPO = "warmwire/agent"
LATEST = "latest"
HASH_CHARS = 16
AGENT_UID = 10001

SUITE = "bookworm"
VARIANT = "minbase"
BASE_PACKAGES = ("python3", "ca-certificates")  # ca-certificates: HTTPS to model providers
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# Not needed at run time; dropping them takes the rootfs from ~270 MB to ~130 MB.
TRIM_DIRS = ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man",
             "usr/share/info", "usr/share/locale", "var/log")
BASE_CHANGES = ('LABEL warmwire.image=base',
                'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
                'ENV LANG=C.UTF-8',
                'CMD ["python3"]')
DEBOOTSTRAP_PHASES = {"Retrieving": "downloading packages", "Extracting": "extracting",
                      "Installing": "installing the core", "Unpacking": "unpacking",
                      "Configuring": "configuring", "Base": "base system installed"}
# Installed into the image at the versions requirements.lock pins, checked against its hashes;
# the wheels' bytes are part of the agent tag.
WHEELS = ("pip", "inotify-simple")

DEFAULT_CACHE = Path.home() / ".cache" / "warmwire" / "images"
ENGINE_TIMEOUT_S = 10
BUILD_TIMEOUT_S = 900
EXIT_FAILED = 1
EXIT_NO_ENGINE = 3
STEP_RE = re.compile(r"^Step \d+/\d+ : ")


class BuildError(Exception):
    """A build step failed; the message says which and what to do."""


class NoEngine(BuildError):
    """No Docker engine answers."""


@dataclass
class Built:
    agent: str                 # warmwire/agent:<hash>
    base: str                  # the base image reference used
    built: list = field(default_factory=list)  # what this run had to build
    seconds: float = 0.0


class Progress:
    def __init__(self, out=sys.stdout, quiet=False):
        self.t0 = time.monotonic()
        self.out = out
        self.quiet = quiet

    def __call__(self, step: str, msg: str):
        if not self.quiet:
            print(f"[{time.monotonic() - self.t0:6.1f}s] {step}: {msg}", file=self.out,
                  flush=True)


# ------------------------------------------------------------------ helpers


def connect(timeout: float = ENGINE_TIMEOUT_S):
    import docker  # imported here so --help works without the SDK
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
        return client
    except Exception as e:
        where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        raise NoEngine(f"no Docker engine answers at {where} ({type(e).__name__}). "
                       f"Start one with `bash images/ensure-docker.sh`.") from None


def _sha(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "big"))
        h.update(p)
    return h.hexdigest()[:HASH_CHARS]


def _image(client, ref: str):
    import docker
    try:
        return client.images.get(ref)
    except docker.errors.ImageNotFound:
        return None


@contextlib.contextmanager
def _locked(cache: Path):
    """One build at a time per cache (CI may start tests and a manual build together)."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def detect_mirror() -> str:
    """The Debian mirror apt already uses here: it is the one known to be reachable."""
    env = os.environ.get("WARMWIRE_DEBIAN_MIRROR")
    if env:
        return env
    for src in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for stanza in src.read_text(errors="replace").split("\n\n"):
            fields = dict(re.findall(r"^(\w[\w-]*):\s*(.+)$", stanza, re.M))
            if SUITE in fields.get("Suites", "").split() and "security" not in fields.get(
                    "URIs", ""):
                return fields["URIs"].split()[0]
    lst = Path("/etc/apt/sources.list")
    if lst.exists():
        m = re.search(rf"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+{SUITE}\s", lst.read_text(), re.M)
        if m:
            return m.group(1)
    return DEFAULT_MIRROR


# ------------------------------------------------------------------ base image


def base_tag() -> str:
    recipe = json.dumps([RECIPE_VERSION, SUITE, VARIANT, BASE_PACKAGES, TRIM_DIRS,
                         BASE_CHANGES]).encode()
    return f"{BASE_REPO}:{_sha(recipe)}"


def _debootstrap(tarball: Path, cache: Path, mirror: str, log: Progress):
    if shutil.which("debootstrap") is None:
        raise BuildError("debootstrap is not installed: run `bash images/ensure-docker.sh` "
                         "(installs it) or `apt-get install -y debootstrap`, or pass "
                         "--base python:3.11-slim if a registry is reachable")
    if os.geteuid() != 0:
        raise BuildError("debootstrap needs root; run the first build as root, or pass "
                         "--base IMAGE to build on an existing Python image")
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="rootfs-", dir=cache))
    logfile = cache / "debootstrap.log"
    cmd = ["debootstrap", f"--variant={VARIANT}", f"--include={','.join(BASE_PACKAGES)}",
           f"--cache-dir={debs.resolve()}", SUITE, str(work), mirror]
    log("base", f"debootstrap {SUITE} from {mirror} (about a minute; log {logfile})")
    try:
        with open(logfile, "w") as out:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True)
            seen = set()
            for line in proc.stdout:
                out.write(line)
                words = line.split()
                # One progress line per phase, not one per package.
                if len(words) > 1 and words[0] == "I:" and words[1] in DEBOOTSTRAP_PHASES \
                        and words[1] not in seen:
                    seen.add(words[1])
                    log("base", f"debootstrap: {DEBOOTSTRAP_PHASES[words[1]]}")
            if proc.wait() != 0:
                raise BuildError(f"debootstrap failed (exit {proc.returncode}); see {logfile}")
        for rel in TRIM_DIRS:
            target = work / rel
            if target.is_dir():
                for child in target.iterdir():
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child)
                    else:
                        child.unlink()
        log("base", "packing rootfs tarball")
        partial = tarball.with_suffix(".partial")
        subprocess.run(["tar", "--numeric-owner", "-C", str(work), "-cf", str(partial), "."],
                       check=True)
        partial.rename(tarball)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def ensure_base(client, cache: Path, mirror: str, log: Progress, built: list) -> str:
    tag = base_tag()
    if _image(client, tag) is not None:
        log("base", f"{tag} present")
        return tag
    repo, version = tag.split(":")
    tarball = cache / f"base-{version}.tar"
    if tarball.exists():
        log("base", f"using cached rootfs {tarball}")
    else:
        _debootstrap(tarball, cache, mirror, log)
    log("base", f"docker import -> {tag}")
    client.api.import_image_from_file(str(tarball), repository=repo, tag=version,
                                      changes=list(BASE_CHANGES))
    if _image(client, tag) is None:
        raise BuildError(f"docker import did not produce {tag}")
    built.append(tag)
    return tag


def ensure_named_base(client, ref: str, log: Progress) -> str:
    if _image(client, ref) is None:
        log("base", f"pulling {ref}")
        try:
            client.images.pull(ref)
        except Exception as e:
            raise BuildError(f"base image {ref} is not present and could not be pulled "
                             f"({type(e).__name__}); drop --base to build a local "
                             f"Debian base") from None
    log("base", f"{ref} (given)")
    return ref


# ------------------------------------------------------------------ agent image


def ensure_wheels(cache: Path, log: Progress) -> list[Path]:
    """WHEELS as requirements.lock pins them, fetched once with the host's pip (the image has no
    network); a wheel whose hash the lock does not list is never used."""
    folder = cache / "wheels"
    folder.mkdir(parents=True, exist_ok=True)
    pins = {pin.name: pin for pin in locked.read_pins() if pin.marker is None}
    found = []
    for name in WHEELS:
        pin = pins.get(name)
        if pin is None:
            raise BuildError(f"{locked.LOCK.name} pins no {name} for every platform: "
                             f"run ./run.sh lock")
        pattern = f"{name.replace('-', '_')}-{pin.version}-*.whl"
        hits = _locked_wheels(folder, pattern, pin, log)
        if not hits:
            log("wheels", f"fetching {name}=={pin.version}")
            # Only a published wheel: one pip built from an sdist would have no locked hash.
            proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps",
                                   "--only-binary", ":all:", "--disable-pip-version-check",
                                   "-q", "-d", str(folder), f"{name}=={pin.version}"],
                                  capture_output=True, text=True)
            hits = _locked_wheels(folder, pattern, pin, log)
            if proc.returncode != 0 or not hits:
                raise BuildError(f"could not fetch a wheel of {name}=={pin.version} with a "
                                 f"hash {locked.LOCK.name} lists: "
                                 f"{proc.stderr.strip()[-500:]}")
        found.append(hits[0])
    return found


def _locked_wheels(folder: Path, pattern: str, pin: locked.Pin, log: Progress) -> list[Path]:
    """The wheels in `folder` matching `pattern` whose sha256 the lock lists for `pin`; any
    other (damaged, or not the file the lock names) is removed so a fetch can replace it."""
    good = []
    for wheel in sorted(folder.glob(pattern)):
        if f"sha256:{hashlib.sha256(wheel.read_bytes()).hexdigest()}" in pin.hashes:
            good.append(wheel)
        else:
            log("wheels", f"removing {wheel.name}: its hash is not in {locked.LOCK.name}")
            wheel.unlink()
    return good


def agent_tag(base_id: str, wheels: list[Path]) -> str:
    parts = [RECIPE_VERSION.encode(), base_id.encode(), str(AGENT_UID).encode()]
    for staged, src in sorted(AGENT_SOURCES.items()):
        parts += [staged.encode(), src.read_bytes()]
    for w in wheels:
        parts += [w.name.encode(), w.read_bytes()]
    return f"{AGENT_REPO}:{_sha(*parts)}"


def _stage(ctx: Path, wheels: list[Path]):
    for staged, src in AGENT_SOURCES.items():
        dest = ctx / staged
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest)  # copy2 keeps mtimes: unchanged files keep layer cache hits
    (ctx / "wheels").mkdir()
    for w in wheels:
        shutil.copy2(w, ctx / "wheels" / w.name)


def ensure_agent(client, base_ref: str, cache: Path, log: Progress, built: list,
                 force=False) -> str:
    wheels = ensure_wheels(cache, log)
    base = _image(client, base_ref)
    tag = agent_tag(base.id, wheels)
    repo, version = tag.split(":")
    image = None if force else _image(client, tag)
    if image is not None:
        log("agent", f"{tag} present")
    else:
        log("agent", f"building {tag} on {base_ref}")
        with tempfile.TemporaryDirectory(prefix="ctx-", dir=cache) as ctx:
            _stage(Path(ctx), wheels)
            lines = []
            stream = client.api.build(
                path=ctx, tag=tag, buildargs={"BASE": base_ref, "AGENT_UID": str(AGENT_UID)},
                labels={"warmwire.hash": version, "warmwire.base": base_ref},
                # --bridge=none engines have no default network; the build needs none.
                network_mode="none", rm=True, forcerm=True, pull=False, decode=True,
                timeout=BUILD_TIMEOUT_S)
            for chunk in stream:
                if "error" in chunk:
                    tail = "".join(lines[-20:])
                    raise BuildError(f"agent build failed: {chunk['error'].strip()}\n{tail}")
                text = chunk.get("stream", "")
                lines.append(text)
                if STEP_RE.match(text):
                    log("agent", text.strip())
        image = _image(client, tag)
        if image is None:
            raise BuildError(f"build finished but {tag} is missing")
        built.append(tag)
        _prune_old_agents(client, tag, log)
    image.tag(repo, LATEST)  # cheap; lets people `docker run warmwire/agent`
    return tag


def _prune_old_agents(client, keep: str, log: Progress):
    """Drop agent tags of earlier builds so they do not pile up. Never forced: an image a
    container still runs is refused by the engine and simply kept."""
    import docker
    for img in client.images.list(name=AGENT_REPO, filters={"label": "warmwire.image=agent"}):
        for old in img.tags:
            if old not in (keep, f"{AGENT_REPO}:{LATEST}"):
                try:
                    client.images.remove(old)
                    log("agent", f"removed old {old}")
                except docker.errors.APIError:
                    pass
    # An old tag whose image a container still used was only untagged; once unused, drop it.
    client.images.prune(filters={"dangling": True, "label": "warmwire.image=agent"})


# ------------------------------------------------------------------ entry points


def ensure_images(base: str | None = None, cache: Path | None = None, mirror: str | None = None,
                  force: bool = False, log: Progress | None = None, client=None) -> Built:
    """Build what is missing and return the tags. Raises NoEngine / BuildError."""
    log = log or Progress()
    t0 = time.monotonic()
    cache = Path(cache or os.environ.get("WARMWIRE_IMAGE_CACHE") or DEFAULT_CACHE).expanduser()
    base = base or os.environ.get("WARMWIRE_IMAGE_BASE") or None
    client = client or connect()
    log("engine", f"Docker {client.version().get('Version', '?')}")
    built: list = []
    with _locked(cache):
        if base:
            base_ref = ensure_named_base(client, base, log)
        else:
            base_ref = ensure_base(client, cache, mirror or detect_mirror(), log, built)
        tag = ensure_agent(client, base_ref, cache, log, built, force=force)
    seconds = time.monotonic() - t0
    log("done", f"{tag} ({'built ' + ', '.join(built) if built else 'nothing to build'}, "
                f"{seconds:.1f}s)")
    return Built(tag, base_ref, built, seconds)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m images.build",
        description="Build the warmwire base and agent images if they are missing.",
        epilog="Exit codes: 0 ok, 1 build failed, 3 no Docker engine answers.")
    p.add_argument("--base", metavar="IMAGE",
                   help="build the agent on this image (e.g. python:3.11-slim) instead of "
                        "a local debootstrapped Debian; env WARMWIRE_IMAGE_BASE")
    p.add_argument("--cache", metavar="DIR", type=Path,
                   help=f"download/rootfs cache (default {DEFAULT_CACHE}); "
                        f"env WARMWIRE_IMAGE_CACHE")
    p.add_argument("--mirror", metavar="URL",
                   help="Debian mirror for debootstrap (default: the one apt uses here); "
                        "env WARMWIRE_DEBIAN_MIRROR")
    p.add_argument("--force", action="store_true", help="rebuild the agent image even if "
                   "its tag exists (the base is rebuilt by removing its tag)")
    p.add_argument("--quiet", action="store_true", help="print only the agent tag")
    args = p.parse_args(argv)
    try:
        built = ensure_images(args.base, args.cache, args.mirror, args.force,
                              Progress(quiet=args.quiet))
    except NoEngine as e:
        print(f"images.build: {e}", file=sys.stderr)
        return EXIT_NO_ENGINE
    except BuildError as e:
        print(f"images.build: {e}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as e:  # the engine refused something (disk full, API error, ...)
        print(f"images.build: failed: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_FAILED
    if args.quiet:
        print(built.agent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
