#!/usr/bin/env bash
# warmwire's one entry point. Installs what is missing into .venv, then runs a command:
#   ./run.sh                 run every service in the foreground (Ctrl-C stops them all)
#   ./run.sh test [ARGS]     run the whole test suite (ARGS go to pytest)
#   ./run.sh status [--json] state of every service; exit 0 only when all are healthy
#   ./run.sh chat [--chat ID] TEXT   send one message, print what comes back
#   ./run.sh learn PATH      import a Markdown/text file or folder into the knowledge base
#   ./run.sh keys [--client NAME]  CurveZMQ keys for a frontend other hosts reach (SECURITY.md)
#   ./run.sh web-token       make a token for the web page (it then asks for it)
#   ./run.sh classify        JSON lines {"text", "session"?} on stdin -> {"tier","reason"} on stdout
#   ./run.sh bench [--quick] [--json FILE]   the benchmark
#   ./run.sh image [--base IMAGE]  build the agent image (quick when nothing changed)
#   ./run.sh lock [--upgrade]  refresh requirements.lock after a change to pyproject.toml's
#                            dependencies; --upgrade: the newest releases of everything
# Where things live: $WARMWIRE_HOME (default ./.warmwire): data/warmwire.db, logs/, keys/, and
# workspaces/<chat>, each chat's own folder where its agent's tools read, write and run.
# To clear a chat's workspace, delete its folder (a busy chat's folder is lent to its agent
# and comes back when the agent is retired). The web page: http://127.0.0.1:7480
set -euo pipefail
cd "$(dirname "$0")"

VENV=.venv
PY="$VENV/bin/python"
MIN_PYTHON="3.11"
NATIVE_C=services/router/classifier/_native.c
LOCK_FILE=requirements.lock
# Beside .venv, not in it: it must outlive an `rm -rf .venv`.
INSTALL_LOCK="$VENV.lock"
# The lock tool, needed only by `./run.sh lock`; a newer uv may resolve differently.
UV_VERSION="0.13.9"

# A Python >= MIN_PYTHON that can make a venv.
usable_python() {
  command -v "$1" >/dev/null 2>&1 &&
    "$1" -c "import sys, ensurepip, venv
sys.exit(sys.version_info < tuple(map(int, '$MIN_PYTHON'.split('.'))))" 2>/dev/null
}

real_path() { "$1" -c "import os, sys; print(os.path.realpath(sys.executable))"; }

# The interpreter .venv is made from: $WARMWIRE_PYTHON when set; else the distribution's
# /usr/bin/python3, which distributions build with PGO and LTO (11 % fewer instructions and
# about 20 % less time per classified message here than pyenv's default source build; see
# README); else the first python3 on PATH.  Prints its real path.
find_python() {
  local candidate
  if [ -n "${WARMWIRE_PYTHON:-}" ]; then
    usable_python "$WARMWIRE_PYTHON" && real_path "$WARMWIRE_PYTHON" && return 0
    echo "run.sh: WARMWIRE_PYTHON=$WARMWIRE_PYTHON is not a Python >= $MIN_PYTHON with venv" >&2
    return 1
  fi
  for candidate in /usr/bin/python3 python3 python3.13 python3.12 python3.11; do
    if usable_python "$candidate"; then
      real_path "$candidate"; return 0
    fi
  done
  echo "run.sh: warmwire needs Python >= $MIN_PYTHON with venv (apt-get install python3-venv)" >&2
  return 1
}

# One run.sh at a time makes and fills .venv: a second one waits here until the first is done.
take_install_lock() {
  exec {INSTALL_LOCK_FD}>"$INSTALL_LOCK"
  if ! flock --nonblock "$INSTALL_LOCK_FD"; then
    echo "run.sh: another run.sh is installing into $VENV; waiting for it" >&2
    flock "$INSTALL_LOCK_FD"
  fi
}

# Closed before the command runs: a child that inherited the descriptor would hold the lock.
release_install_lock() { exec {INSTALL_LOCK_FD}>&-; }

make_venv() {
  local base
  base="$(find_python)"
  # A venv made from another interpreter than the one chosen now is made again.
  if [ -x "$PY" ] && ! grep -qxF "executable = $base" "$VENV/pyvenv.cfg" 2>/dev/null; then
    echo "run.sh: $VENV was made from another Python; making it again from $base" >&2
    rm -rf "$VENV"
  fi
  if [ ! -x "$PY" ]; then
    echo "run.sh: creating $VENV from $base" >&2
    "$base" -m venv "$VENV"
  fi
}

install_missing() {
  # Reinstall only when pyproject.toml, the lock or the C source it builds changed since the
  # last successful install.
  local stamp="$VENV/.installed-$(cat pyproject.toml "$LOCK_FILE" "$NATIVE_C" | sha256sum | cut -c1-16)"
  if [ ! -f "$stamp" ]; then
    echo "run.sh: installing warmwire and its dependencies into $VENV (the first time takes a few minutes)" >&2
    # Every package at the version and hash the lock gives, pip and setuptools included; then
    # warmwire itself, built by that locked setuptools rather than whatever is newest today.
    "$PY" -m pip install --progress-bar on --require-hashes -r "$LOCK_FILE" >&2
    "$PY" -m pip install --progress-bar on --no-deps --no-build-isolation -e . >&2
    rm -f "$VENV"/.installed-*
    touch "$stamp"
    # The C extension is optional (pip goes on without it); say so once, here, when it is missing.
    "$PY" -c "import services.router.classifier._native" 2>/dev/null ||
      echo "run.sh: the classifier's C extension was not built (no C compiler or Python headers?);" \
           "classifying in pure Python, more slowly (see README)" >&2
  fi
}

# Resolves pyproject.toml's requirements again (supervisor/commands/lock.py says what goes in); ARGS go to
# `uv pip compile`. The next command installs the new lock.
refresh_lock() {
  echo "run.sh: making sure $VENV has the lock tool, uv $UV_VERSION" >&2
  "$PY" -m pip install --quiet "uv==$UV_VERSION" >&2
  echo "run.sh: resolving pyproject.toml's requirements into $LOCK_FILE" >&2
  "$PY" -m supervisor.commands.lock --uv "$VENV/bin/uv" "$@"
}

# The comment block at the top of this file is the help text.
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

docker_answers() { command -v docker >/dev/null 2>&1 && timeout 5 docker info >/dev/null 2>&1; }

command="${1:-run}"
[ $# -gt 0 ] && shift
case "$command" in
  -h|--help|help) usage; exit 0 ;;
esac
take_install_lock
make_venv
if [ "$command" = lock ]; then
  refresh_lock "$@"
  exit 0
fi
install_missing
release_install_lock
case "$command" in
  run)
    # With a Docker engine, agents run in containers: build the image if it is missing.
    if docker_answers; then
      "$PY" -m images.build || echo "run.sh: the agent image could not be built; agents will run as local processes" >&2
    fi
    exec "$PY" -m supervisor run "$@" ;;
  image)      exec "$PY" -m images.build "$@" ;;
  test)       exec "$PY" -m pytest -ra "$@" ;;
  status|chat|learn|keys|web-token) exec "$PY" -m supervisor "$command" "$@" ;;
  classify)   exec "$PY" -m services.router.classifier "$@" ;;
  bench)      exec "$PY" -m bench "$@" ;;
  *) echo "run.sh: unknown command '$command'" >&2; usage >&2; exit 2 ;;
esac
