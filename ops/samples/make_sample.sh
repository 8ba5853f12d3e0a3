#!/usr/bin/env bash
# Regenerates ops/samples/consultation.wav (+ consultation.txt) from ACI-Bench valid encounter
# D2N072: its first turns, spoken with espeak-ng, doctor and patient in two voices, 16 kHz mono.
# Needs: espeak-ng and sox (Debian: apt-get install -y espeak-ng sox), python3.
# Usage: ops/samples/make_sample.sh [path/to/valid.csv]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
csv="${1:-$here/../../../shared/data/aci-bench/valid.csv}"
encounter="D2N072"
turns=21            # the first 21 spoken turns: under 60 s of speech
doctor_voice="en-us+m3"
patient_voice="en-us+f2"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

python3 - "$csv" "$encounter" "$turns" >"$here/consultation.txt" <<'PY'
import csv, sys
path, encounter, turns = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(path, newline="", encoding="utf-8") as f:
    row = next(r for r in csv.DictReader(f) if r["encounter_id"] == encounter)
kept = 0
for line in row["dialogue"].splitlines():
    speaker, _, text = line.partition("]")
    text = text.strip(" -.")
    if not text.strip(" .,"):
        continue  # empty turns ("[doctor]" alone) say nothing
    print(f"{speaker.strip('[ ')}: {text.strip()}")
    kept += 1
    if kept == turns:
        break
PY

i=0
while IFS= read -r line; do
  speaker="${line%%:*}"
  text="${line#*: }"
  voice="$doctor_voice"
  [[ "$speaker" == "patient" ]] && voice="$patient_voice"
  i=$((i + 1))
  espeak-ng -v "$voice" -s 190 -w "$work/turn-$(printf %03d $i).wav" "$text"
  sox -n -r 22050 -c 1 "$work/gap-$(printf %03d $i).wav" trim 0.0 0.25
done <"$here/consultation.txt"

sox $(ls "$work"/*.wav | sort) -r 16000 -c 1 -b 16 "$here/consultation.wav"
soxi -D "$here/consultation.wav"
