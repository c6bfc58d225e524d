#!/usr/bin/env bash
# A non-editable `pip install .` works outside the repository: the dashboard finds its templates
# and presets (package data), and the shipped quickstart preset runs from site-packages.
#
# The fresh venv borrows .venv's dependencies through a path file (installing torch and the
# rest again would take minutes and test pip, not tuneloop); tuneloop itself is built and
# installed from this checkout, not editable. Run from the repository root after scripts/setup.sh.
#
#   scripts/check_install.sh          the dashboard, and the quickstart for 1 epoch on SmolLM2 (~4 min)
#   scripts/check_install.sh --quick  the dashboard only
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
VENV=$TMP/venv
WORK=$TMP/work
mkdir "$WORK"
python3 -m venv "$VENV"
SITE=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
DEPS=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
echo "$DEPS" > "$SITE/tuneloop-deps.pth"  # a plain path: .venv's editable-install hook is not run
"$VENV/bin/python" -m pip install -q --no-deps "$REPO"
cd "$WORK"
"$VENV/bin/python" - <<'PY'
import tuneloop, pathlib
where = pathlib.Path(tuneloop.__file__).resolve()
assert "site-packages" in str(where), f"tuneloop imported from {where}, not the installed wheel"
print(f"installed: {where.parent}")
PY
"$VENV/bin/tuneloop" ui --runs-dir "$WORK/runs" --port 8931 > ui.log 2>&1 &
UI=$!
trap 'kill $UI 2>/dev/null || true; rm -rf "$TMP"' EXIT
for _ in $(seq 60); do curl -sf http://127.0.0.1:8931/ > /dev/null && break; sleep 1; done
curl -sf http://127.0.0.1:8931/launch | grep -q "presets/quickstart/quickstart.yaml" \
    || { echo "the dashboard's Launch page lists no shipped preset"; cat ui.log; exit 1; }
curl -sf -o /dev/null http://127.0.0.1:8931/static/plotly.min.js
echo "dashboard: ok (Launch page offers the packaged quickstart preset)"
if [ "${1:-}" != "--quick" ]; then
    PRESET=$("$VENV/bin/python" -c "import tuneloop, pathlib; print(pathlib.Path(tuneloop.__file__).parent / 'presets/quickstart/quickstart.yaml')")
    # The general check's shipped sets must load from site-packages (package data); the adapter scale
    # curve it may lead to (~2 min) is left to the slow test, which runs the same quickstart in the checkout.
    "$VENV/bin/tuneloop" run "$PRESET" --set "eval.scale_curve=[]"
    test -f "$WORK"/runs/quickstart-*/eval.json
    grep -q '"general"' "$WORK"/runs/quickstart-*/eval.json
    echo "quickstart from the installed package: ok"
fi
