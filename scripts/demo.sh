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
victim=$(find "$out/node/store/objects" -type f -print -quit)
python3 - "$victim" <<'PY'
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read()); b[-1] ^= 1; open(p, "wb").write(bytes(b))
PY
incisive node fsck || echo "(corruption detected, exit $?)"
incisive node fsck --repair --json >/dev/null
incisive node import "$out/cohort/dicom" --json >/dev/null
incisive node fsck

step "9. DICOM network: the node as a PACS peer (C-ECHO, C-STORE, C-FIND) and DICOMweb"
export INCISIVE_ALLOWED_AES='["ECHOSCU","STORESCU","FINDSCU"]' TCP_NODELAY=1
incisive node serve --dicom-port 0 --http-port 0 > "$out/serve.log" 2>&1 &
serve_pid=$!
trap 'kill $serve_pid 2>/dev/null || true' EXIT
for _ in $(seq 120); do [ -s "$out/node/run/serve.json" ] && break; sleep 0.5; done
read -r dport hport < <(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["dicom_port"], d["http_port"])' "$out/node/run/serve.json")
echo "DICOM port $dport, HTTP port $hport"
dcmtk=/usr/bin  # dcmtk's tools (the venv also has pynetdicom's apps under the same names)
if [ -x $dcmtk/storescu ]; then
  incisive demo-data "$out/pacs" --patients 3 --seed 99 >/dev/null
  $dcmtk/echoscu -aec INCISIVE 127.0.0.1 "$dport" && echo "C-ECHO ok"
  $dcmtk/storescu -aec INCISIVE +sd +r 127.0.0.1 "$dport" "$out/pacs/dicom" && echo "C-STORE of $(find "$out/pacs/dicom" -type f | wc -l) instances ok (each de-identified before the response)"
  $dcmtk/findscu -aec INCISIVE -S -k QueryRetrieveLevel=STUDY -k PatientID -k StudyDate -k StudyInstanceUID 127.0.0.1 "$dport" 2>&1 \
    | grep -c "StudyInstanceUID" | xargs -I{} echo "C-FIND: {} pseudonymised studies"
else
  echo "(dcmtk not installed: skipping echoscu/storescu/findscu)"
fi
token=$(incisive node token create --role viewer --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
curl -sf -H "Authorization: Bearer $token" "http://127.0.0.1:$hport/dicom-web/studies?limit=3" \
  | python3 -c 'import json,sys; d=json.load(sys.stdin); print("QIDO-RS:", len(d), "studies, first PatientID", d[0]["00100020"]["Value"][0])'
kill $serve_pid; wait $serve_pid 2>/dev/null || true; trap - EXIT

step "10. Backup: exact replica to an external drive, verify, restore, fsck the restored node"
mkdir -p "$out/backup-disk"   # stands in for a mounted USB or network drive
incisive backup target add usb "$out/backup-disk"
incisive backup run usb --verify
incisive backup list usb
incisive backup restore latest --to "$out/restored"
incisive node fsck --home "$out/restored"
incisive node status || true

step "11. Federation: a platform, three hospitals dialling out, a researcher's count with disclosure control"
jfield() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pport=$(free_port)
echo "The platform makes its own small CA and HTTPS certificate (no corporate PKI here); every link is TLS:"
incisive platform init "$out/platform" --ca
incisive platform serve --home "$out/platform" --port "$pport" > "$out/platform.log" 2>&1 &
pids=($!)
trap 'kill ${pids[*]} 2>/dev/null || true' EXIT
ca="$out/platform/ca/ca.pem"
for _ in $(seq 120); do curl -sf --cacert "$ca" "https://127.0.0.1:$pport/api/v1/health" >/dev/null && break; sleep 0.5; done
export INCISIVE_PLATFORM_URL="https://127.0.0.1:$pport" INCISIVE_CA_FILE="$ca"
export INCISIVE_AGENT_HEARTBEAT_S=3  # the demo's agents report every 3 s (default 30), so the platform shows news soon
curl -sI --cacert "$ca" "$INCISIVE_PLATFORM_URL/api/v1/health" | grep -i '^strict-transport-security' || true
# the admin creates the account (a one-time activation secret); alice makes her own token with it
secret=$(incisive platform user create alice --role researcher --home "$out/platform" --json | jfield activation_secret)
export INCISIVE_TOKEN=$(incisive platform token activate alice --secret "$secret" --json | jfield token)
for hospital in B C; do
  lower=$(echo $hospital | tr BC bc)
  incisive demo-data "$out/cohort-$lower" --patients 25 --seed $((RANDOM % 1000 + 100)) >/dev/null
  incisive node init "$out/node-$lower" --provider "Hospital $hospital" >/dev/null
  incisive node import "$out/cohort-$lower/dicom" --clinical "$out/cohort-$lower/clinical.csv" --drop patient_name \
    --home "$out/node-$lower" --json >/dev/null
done
for dir in node node-b node-c; do
  provider=$(python3 -c 'import sys,tomllib; print(tomllib.load(open(sys.argv[1],"rb"))["provider"])' "$out/$dir/incisive.toml")
  invite=$(incisive platform node invite "$provider" --home "$out/platform" --json | jfield token)
  incisive node enrol "$INCISIVE_PLATFORM_URL" --token "$invite" --ca-file "$ca" --home "$out/$dir"
  incisive node agent --home "$out/$dir" > "$out/$dir-agent.log" 2>&1 &
  pids+=($!)
done

step "11b. A Central Node for two hospitals that cannot host one: one process, a tenant each, encrypted per tenant"
echo "The operator (a processor) sets it up; each tenant gets its own node directory, catalogue, data key, AE title:"
incisive central init "$out/central" --country DE --provider "Hosting GmbH" --region eu-central --json >/dev/null
export INCISIVE_CENTRAL="$out/central"
incisive central check || true
declare -A manager
for h in d e; do
  manager[$h]=$(incisive central tenant add "Hospital ${h^^}" --country IT --contact "IT lead <it@hospital-$h.example>" \
    --json | jfield manager_token)
done
cport=$(free_port)
incisive central serve --http-port "$cport" --dicom-port 0 > "$out/central-serve.log" 2>&1 &
pids+=($!)
for _ in $(seq 120); do [ -s "$out/central/run/serve.json" ] && break; sleep 0.5; done
curl="http://127.0.0.1:$cport"
echo "Each provider pseudonymises at the hospital with its own key (never sent) and uploads (resumable, idempotent):"
for h in d e; do
  incisive demo-data "$out/cohort-$h" --patients 20 --seed $((RANDOM % 1000 + 100)) >/dev/null
  incisive upload init "$out/uploader-$h" --provider "Hospital ${h^^}" >/dev/null
  incisive upload run "$out/cohort-$h/dicom" --clinical "$out/cohort-$h/clinical.csv" --drop patient_name \
    --to "$curl" --token "${manager[$h]}" --uploader "$out/uploader-$h"
done
echo "A rerun sends nothing again (the uploader's journal):"
incisive upload run "$out/cohort-d/dicom" --to "$curl" --token "${manager[d]}" --uploader "$out/uploader-d" --json \
  | python3 -c 'import json,sys; d=json.load(sys.stdin); print({k: d.get(k) for k in ("sent", "skipped", "duplicates")})'
echo "Identified DICOM sent straight to the Central Node is refused at its door, with the reason:"
python3 - "$curl" "${manager[d]}" "$(find "$out/cohort-d/dicom" -type f -print -quit)" <<'PY'
import sys, httpx
url, token, path = sys.argv[1:]
body = b"--b\r\nContent-Type: application/dicom\r\n\r\n" + open(path, "rb").read() + b"\r\n--b--\r\n"
r = httpx.post(url + "/dicom-web/studies", content=body, timeout=30, headers={
    "Authorization": f"Bearer {token}", "Content-Type": 'multipart/related; type="application/dicom"; boundary=b'})
print(r.status_code, r.json().get("detail", r.text)[:160])
PY
echo "The operator sees tenants and usage, never data; its token is refused on a tenant's data (and audited):"
incisive central tenant usage
optoken=$(incisive central operator-token --json | jfield operator_token)
curl -s -o /dev/null -w "operator token on /dicom-web/studies: HTTP %{http_code}\n" -H "Authorization: Bearer $optoken" "$curl/dicom-web/studies"
echo "Hospital D queries its own tenant (QIDO-RS); Hospital E's token never sees D's studies:"
for h in d e; do
  curl -sf -H "Authorization: Bearer ${manager[$h]}" "$curl/dicom-web/studies" \
    | python3 -c 'import json,sys; print("  tenant '"$h"':", len(json.load(sys.stdin)), "studies")'
done
python3 - "$out/central" <<'PY'
import pathlib, sys
central = pathlib.Path(sys.argv[1])
objects = [p for p in central.glob("tenants/*/store/objects/*/*/*") if p.is_file()]
plain = sum(1 for p in objects if p.read_bytes()[128:132] == b"DICM")
print(f"  {len(objects)} objects in the central store, {plain} readable as DICOM without the tenant's key")
PY
echo "Each tenant is enrolled with the platform as its own node; one central agent serves both:"
for h in d e; do
  invite=$(incisive platform node invite "Hospital ${h^^}" --home "$out/platform" --json | jfield token)
  incisive central tenant enrol "hospital-$h" "$INCISIVE_PLATFORM_URL" --token "$invite" --ca-file "$ca"
done
incisive central agent > "$out/central-agent.log" 2>&1 &
pids+=($!)
for _ in $(seq 120); do
  online=$(incisive platform nodes --home "$out/platform" --json | python3 -c 'import json,sys; print(sum(n.get("status") == "online" for n in json.load(sys.stdin)))')
  [ "$online" = 5 ] && break; sleep 0.5
done
incisive platform nodes --home "$out/platform"
echo "A researcher's question, answered by each node on its own data. Only safe cells leave a node; this new"
echo "platform answers noisy counts only (require_dp), so the platform's default ε is applied and charged:"
incisive query count --by cancer_type
incisive query count --by sex --unit studies --epsilon 1 --project demo
echo "A filter on a handful of patients is refused by the nodes' subset rule, and the researcher is told why:"
incisive query count --by age_band --where sex=F --where cancer_type=prostate --project demo

step "12. Federated learning through the platform: its SuperLink, a SuperNode started by each hospital's agent"
python3 - "$out" <<'PY'
import sys
from pathlib import Path
from incisive.federated.partition import breast_cancer, partition, write_csv
out = Path(sys.argv[1])
x, y, names = breast_cancer()  # scikit-learn's bundled reference data, split unevenly across the nodes
for part, idx in zip("abcde", partition(y, 5, "non-iid", seed=3)):
    write_csv(out / f"bc-{part}.csv", x, y, names, idx, prefix=f"BC{part.upper()}")
PY
for part in a b c; do
  dir=node; [ $part = a ] || dir=node-$part
  incisive node import --clinical "$out/bc-$part.csv" --home "$out/$dir" --json >/dev/null
done
for part in d e; do  # the Central Node's tenants get theirs the provider's way: pseudonymised at the hospital
  incisive upload run --clinical "$out/bc-$part.csv" --to "$curl" --token "${manager[$part]}" \
    --uploader "$out/uploader-$part" --json >/dev/null
done
secret=$(incisive platform user create ada --role admin --home "$out/platform" --json | jfield activation_secret)
admin=$(incisive platform token activate ada --secret "$secret" --json | jfield token)
echo "The platform's admin registers the bundle (code + sha256 in the platform's model registry):"
incisive model register "$(python3 -c 'import incisive.federated.bundles as b, os; print(os.path.dirname(b.__file__))')/tabular_risk" \
  --name tabular-risk --version 1 --token "$admin"
echo "Each hospital's data-protection manager reviews what the bundle declares (inputs, outputs, code, the diff"
echo "against the last version approved there), then approves that sha256 (downloaded from the platform, re-hashed):"
incisive node policy review tabular-risk:1 --from-platform --home "$out/node" --reviewer dpo-a --json \
  | python3 -c 'import json,sys; r=json.load(sys.stdin); i=r["inputs"]; print("declared inputs:", len(i["clinical_fields"]), "clinical fields, label", i.get("label"), "| outputs:", ", ".join(r["outputs"]), "|", len(r["files"]), "files")'
for dir in node node-b node-c; do
  share=(); [ $dir = node ] && share=(--share-inference-summary)  # hospital A also lets inference summaries out
  incisive node policy approve tabular-risk:1 --from-platform "${share[@]}" --reviewer dpo --home "$out/$dir"
done
echo "The Central Node's providers approve for their own tenants, remotely (the operator cannot):"
sha=$(incisive model list --json | python3 -c 'import json,sys; print(next(m["sha256"] for m in json.load(sys.stdin) if m["ref"] == "tabular-risk:1"))')
for h in d e; do
  incisive central tenant policy approve tabular-risk:1 --sha256 "$sha" --reviewer "dpo-$h" --central "$curl" --token "${manager[$h]}"
done
echo "A researcher trains across all hospitals; each agent starts a SuperNode that dials out to the platform's"
echo "SuperLink over TLS (certificate from the platform CA, pinned at enrolment) with SuperNode authentication"
echo "(each hospital's Flower key, made at enrolment, is registered with the SuperLink; no other node gets in)."
echo "At each hospital the bundle's code runs caged (bubblewrap: no network, no node directory, no pseudonyms;"
echo "only the declared inputs, under random per-job ids; parameters and metrics checked before they leave):"
job=$(incisive fl train --model tabular-risk:1 --nodes all --rounds 3 --round-timeout 120 --no-wait --json | jfield id)
incisive fl status "$job" --follow
grep -m1 -o 'Uvicorn running on https://[0-9.:]*' "$out/platform/fl/superlink/superlink.log" | sed 's/^/SuperLink: /' || true
grep -c 'RegisterNode\] Created' "$out/platform/fl/superlink/superlink.log" | sed 's/$/ SuperNode keys registered with the SuperLink/' || true
grep -h -m1 "sandbox start" "$out"/node*/logs/sandbox-*.log 2>/dev/null | head -1 | cut -c1-60 || true
incisive model list
incisive fl plot "$job" --out "$out/fl-plots"
echo "Inference with the trained model at two hospitals: per-patient scores stay in each one's catalogue; only"
echo "hospital A's policy lets a k-suppressed summary come back to the platform:"
for dir in node node-b; do
  node_id=$(python3 -c 'import sys,tomllib; print(tomllib.load(open(sys.argv[1],"rb"))["node_id"])' "$out/$dir/incisive.toml")
  incisive infer --model "tabular-risk:1@$job" --node-id "$node_id" --timeout 300
done

step "12b. GDPR duties as software at Hospital A: contact, processors, the Art. 30 record, a breach's 72 h clock, an erase"
export INCISIVE_NODE="$out/node"
incisive compliance contact set --name "Ann Admin" --email it@hospital-a.example --role "technical contact" \
  --dpo-name "Dora Protect" --dpo-email dpo@hospital-a.example
incisive compliance set controller-name "Hospital A Foundation"
incisive compliance set controller-address "1 Hospital Street, 10115 Berlin"
incisive compliance set legal-basis "Art. 6(1)(e) and Art. 9(2)(j) GDPR; national research law"
incisive compliance set retention-years 10
incisive compliance set node-country DE
incisive compliance set backup-location usb DE
printf '%%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\ntrailer << /Root 1 0 R >>\n%%%%EOF\n' > "$out/dpa.pdf"
echo "A processor outside the EU without standard contractual clauses (SCC) and a transfer impact assessment is a finding:"
incisive compliance processor add "CloudCo Inc" --service hosting --country US --dpa-signed 2026-01-10 \
  --document "$out/dpa.pdf" --checklist all=yes --json >/dev/null
incisive compliance check || echo "(compliance check exit $?: findings above)"
cloudco=$(incisive compliance processor ls --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
incisive compliance processor update "$cloudco" --scc --tia "$out/dpa.pdf" --json >/dev/null
incisive compliance check && echo "(exit 0 once SCC and the TIA are filed: a record the DPO can sign)"
incisive compliance ropa --html "$out/ropa.html"
python3 - "$out/ropa.html" <<'PY'
import re, sys
html = open(sys.argv[1], encoding="utf-8").read()
heads = [re.sub("<[^>]+>", "", h).strip() for h in re.findall(r"<h2[^>]*>(.*?)</h2>", html, re.S)]
print(f"RoPA (Art. 30), {len(html) // 1024} KiB HTML, sections: " + "; ".join(heads[:9]))
PY
if command -v chromium >/dev/null; then incisive compliance ropa --pdf "$out/ropa.pdf" && echo "RoPA as PDF: $out/ropa.pdf"; fi
echo "A breach is opened: its 72 h deadline shows in node status and, with the next heartbeat, on the platform:"
bid=$(incisive compliance breach open --summary "Backup disk lost in transit" --nature confidentiality --all-data \
  --consequences "Pseudonymised images of the whole node could be read by the finder" --json | jfield id)
incisive node status | grep -A4 -i "breach" || true
for _ in $(seq 30); do
  incisive platform nodes --home "$out/platform" --json | python3 -c 'import json,sys; sys.exit(0 if any((n.get("breach") or {}).get("open") for n in json.load(sys.stdin)) else 1)' && break
  sleep 1
done
incisive platform nodes --home "$out/platform" --json | python3 -c '
import json, sys
for n in json.load(sys.stdin):
    b = n.get("breach") or {}
    if b.get("open"):
        print("platform node list:", n["node_id"], "-", b["open"], "open breach, deadline", b.get("deadline"), "-", b.get("hours_left"), "h left")'
incisive compliance breach update "$bid" --measures "Disk was encrypted (restic); key rotated" --dpa-notified-at "$(sleep 1; date -u +%Y-%m-%dT%H:%M:%SZ)" --json >/dev/null
incisive compliance breach close "$bid" --measures "Courier procedure changed" --json >/dev/null
incisive compliance breach ls
echo "A patient asks to be erased: found with the provider's key (pseudonym + counts), then removed from store and catalogue:"
mrn=$(sed -n 2p "$out/cohort/clinical.csv" | cut -d, -f1)
lookup() { incisive compliance subject lookup --patient-id "$mrn" --json | python3 -c 'import json,sys; d=json.load(sys.stdin); print("held:", d["held"], {k: v for k, v in d["counts"].items() if k in ("studies", "series", "instances", "clinical")})'; }
lookup
incisive node stats --json | python3 -c 'import json,sys; d=json.load(sys.stdin); print("before:", {k: d[k] for k in ("patients", "studies")})'
incisive compliance subject erase --patient-id "$mrn" --reason "request DSR-2026-001" --confirm
incisive node stats --json | python3 -c 'import json,sys; d=json.load(sys.stdin); print("after: ", {k: d[k] for k in ("patients", "studies")})'
lookup
incisive compliance access-report --since 2026-01-01
incisive compliance pack --out "$out/evidence.zip" --json | python3 -c 'import json,sys; d=json.load(sys.stdin); print("evidence pack:", len(d["files"]), "files, problems:", d["problems"])'
kill ${pids[*]} 2>/dev/null || true; wait 2>/dev/null || true; trap - EXIT
incisive audit verify --node "$out/node"
incisive audit verify --platform "$out/platform"

step "13. No original PHI value anywhere a node wrote (store, catalogue, logs, backup, restored copy, Central Node)"
python3 - "$out" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
phi = set()
for manifest in out.glob("*/phi_manifest.json"):
    phi.update(v.encode() for v in json.loads(manifest.read_text()) if len(v) >= 4)
keys = {out / "node/secrets/pseudonym.key", out / "restored/secrets/pseudonym.key"}
roots = [out / "node", out / "restored", out / "backup-disk", out / "central"]
files = [p for r in roots if r.exists() for p in r.rglob("*") if p.is_file() and p not in keys]
leaks = [(str(p), v) for p in files for v in phi if v in p.read_bytes()]
print(f"scanned {len(files)} files for {len(phi)} PHI values: {len(leaks)} found")
sys.exit(1 if leaks else 0)
PY
