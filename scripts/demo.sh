#!/usr/bin/env bash
# make demo: the most complete end-to-end path that works today, on synthetic data.
set -euo pipefail
out=${1:-demo-out}
patients=${2:-12}
rm -rf "$out"
mkdir -p "$out"
step() { printf '\n\033[1;34m== %s ==\033[0m\n' "$*"; }

step "1. Synthetic cohort with realistic (fake) PHI: $patients patients"
incisive demo-data "$out/cohort" --patients "$patients"

step "2. Initialise a node for 'Hospital A' (settings, pseudonym key, store, catalogue)"
incisive node init "$out/node" --provider "Hospital A"
export INCISIVE_NODE="$out/node"

step "2b. Readiness check of this machine against the node spec (demo profile)"
incisive node check --profile demo || echo "(check exit code $? — see the report above)"

step "3. A CSV with a name column is refused before anything is imported"
incisive node import "$out/cohort/dicom" --clinical "$out/cohort/clinical.csv" || echo "(refused as expected)"

step "4. Import DICOM + clinical CSV, pseudonymised at the door"
incisive node import "$out/cohort/dicom" --clinical "$out/cohort/clinical.csv" --drop patient_name

step "5. Re-import: nothing new is stored"
incisive node import "$out/cohort/dicom" --json | python3 -c 'import json,sys; d=json.load(sys.stdin)["dicom"]; print({k: d[k] for k in ("imported", "duplicate", "quarantined")})'

step "6. What the node holds"
incisive node stats
incisive node ls studies --limit 5

step "7. Data-quality report (also as HTML)"
incisive node quality --html "$out/quality.html"

step "8. Integrity: fsck, then a flipped byte is caught"
incisive node fsck
victim=$(find "$out/node/store/objects" -type f | sort | head -n1)
python3 - "$victim" <<'PY'
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read()); b[-1] ^= 1; open(p, "wb").write(bytes(b))
PY
incisive node fsck || echo "(corruption detected, exit $?)"
incisive node fsck --repair --json >/dev/null
incisive node import "$out/cohort/dicom" --json >/dev/null
incisive node fsck

step "9. No original PHI value anywhere in the node (byte scan of store, catalogue, logs)"
python3 - "$out" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
phi = [v.encode() for v in json.loads((out / "cohort/phi_manifest.json").read_text()) if len(v) >= 4]
key = out / "node/secrets/pseudonym.key"
files = [p for p in (out / "node").rglob("*") if p.is_file() and p != key]
leaks = [(str(p), v) for p in files for v in phi if v in p.read_bytes()]
print(f"scanned {len(files)} files for {len(phi)} PHI values: {len(leaks)} found")
sys.exit(1 if leaks else 0)
PY
