"""requirements.lock agrees with pyproject.toml, and what is installed agrees with the lock."""

from __future__ import annotations

import hashlib
import importlib.metadata
from collections import defaultdict

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.version import Version

from supervisor.commands import lock as locked
from images import build

REFRESH = "run ./run.sh lock"


# Each lock and the extra it is for (None: the main lock, which run.sh installs).
LOCKS = [(locked.LOCK, None), *((path, extra) for extra, path in locked.SEPARATE_EXTRAS.items())]
LOCK_IDS = [path.name for path, _ in LOCKS]


def by_name(lock) -> dict[str, list[locked.Pin]]:
    found = defaultdict(list)
    for pin in locked.read_pins(lock):
        found[pin.name].append(pin)
    return found


@pytest.fixture(scope="module")
def pins_by_name() -> dict[str, list[locked.Pin]]:
    return by_name(locked.LOCK)


def applies_here(pin: locked.Pin) -> bool:
    return pin.marker is None or Marker(pin.marker).evaluate()


@pytest.mark.parametrize("lock, extra", LOCKS, ids=LOCK_IDS)
def test_lock_was_made_from_this_pyproject(lock, extra):
    recorded = locked.recorded_digest(lock)
    current = locked.inputs_digest(locked.lock_inputs(extra=extra))
    assert recorded == current, f"pyproject.toml's requirements changed since {lock.name}: {REFRESH}"


@pytest.mark.parametrize("lock, extra", LOCKS, ids=LOCK_IDS)
def test_every_requirement_is_pinned_within_its_specifier(lock, extra):
    pins_by_name = by_name(lock)
    for text in locked.requirements(locked.lock_inputs(extra=extra)):
        req = Requirement(text)
        pins = pins_by_name.get(locked.normalise(req.name))
        assert pins, f"{req.name} is not in {lock.name}: {REFRESH}"
        for pin in pins:
            assert req.specifier.contains(Version(pin.version), prereleases=True), \
                f"{req} but {lock.name} pins {pin.name}=={pin.version}: {REFRESH}"


def test_a_separate_extra_stays_out_of_the_everyday_install(pins_by_name):
    for extra in locked.SEPARATE_EXTRAS:
        for text in locked.requirements(locked.lock_inputs(extra=extra)):
            assert locked.normalise(Requirement(text).name) not in pins_by_name, f"{text} is in {locked.LOCK.name}"


@pytest.mark.parametrize("lock, extra", LOCKS, ids=LOCK_IDS)
def test_every_pin_has_hashes_and_applies_once(lock, extra):
    main = by_name(locked.LOCK)
    for name, pins in by_name(lock).items():
        assert all(pin.hashes for pin in pins), f"{name} has no --hash in {lock.name}"
        # Two pins of one package are for different markers: never both installed.
        assert sum(applies_here(pin) for pin in pins) <= 1, f"{name} is pinned twice here"
        # A separate extra's lock is resolved within the main one: shared packages agree.
        assert {p.version for p in pins if applies_here(p)} <= {p.version for p in main.get(name, pins)
                                                                  if applies_here(p)}, name


def test_this_venv_has_the_locked_versions(pins_by_name):
    wrong = {}
    for name, pins in pins_by_name.items():
        for pin in filter(applies_here, pins):
            try:
                installed = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                installed = None
            if installed != pin.version:
                wrong[name] = (pin.version, installed)
    assert not wrong, f"locked vs installed (./run.sh installs the lock): {wrong}"


def test_image_wheels_are_the_locked_files(tmp_path):
    """A cached wheel that is not the file the lock names is replaced, not built into the
    image. (Fetches two small wheels with pip, from its cache when it has them.)"""
    pins = {pin.name: pin for pin in locked.read_pins()}
    pip = pins["pip"]
    forged = tmp_path / "wheels" / f"pip-{pip.version}-py3-none-any.whl"
    forged.parent.mkdir()
    forged.write_bytes(b"not the locked pip")
    wheels = build.ensure_wheels(tmp_path, build.Progress(quiet=True))
    assert len(wheels) == len(build.WHEELS)
    for name, wheel in zip(build.WHEELS, wheels):
        digest = f"sha256:{hashlib.sha256(wheel.read_bytes()).hexdigest()}"
        assert digest in pins[name].hashes, f"{wheel.name} is not a file the lock names"
        assert f"-{pins[name].version}-" in wheel.name
