# The old design's start: prepare the code, then run it (every start, nothing kept).
set -e
VENV=/tmp/venv
python3 -m venv --without-pip "$VENV"
PIP="$(echo /opt/old/wheels/pip-*.whl)"
"$VENV/bin/python" "$PIP/pip" install --quiet --no-index --find-links /opt/old/wheels \
    --disable-pip-version-check --no-cache-dir inotify_simple
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
cp -r /opt/old/src/. "$SITE/"
"$VENV/bin/python" -m compileall -q "$SITE"
exec "$VENV/bin/python" -m runner "$@"
