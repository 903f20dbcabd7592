#!/bin/bash
# `moe bench --ep` and `moe run --ep` under mpirun (see tests/tools/tests.cmake).
# Usage: ep_cli_test.sh MOE_BINARY MPIEXEC [MPIEXEC_ARGS...]
set -u
moe=$1
shift
mpirun=("$@" --oversubscribe --allow-run-as-root -x OMP_NUM_THREADS=1)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

# 1. --ep without mpirun: the launch hint, one line, exit 2.
"$moe" bench --config tiny --ep 2 >"$dir/out" 2>"$dir/err"
rc=$?
[ $rc -eq 2 ] || fail "bench --ep 2 without mpirun exited $rc"
grep -q "^moe: error: --ep 2 needs 2 MPI ranks: mpirun --oversubscribe -np 2" "$dir/err" ||
  fail "no launch hint: $(cat "$dir/err")"
[ "$(wc -l <"$dir/err")" -eq 1 ] || fail "more than one error line: $(cat "$dir/err")"
# ... and with the wrong rank count.
"${mpirun[@]}" -np 3 "$moe" bench --config tiny --ep 2 >"$dir/out" 2>"$dir/err"
grep -q "needs 2 MPI ranks" "$dir/err" || fail "wrong world size: $(cat "$dir/err")"

# 2. bench --ep 2: the EP columns and 0 wrong on every row.
"${mpirun[@]}" -np 2 "$moe" bench --config tiny --ep 2 --tokens 1,7,33 --json "$dir/ep.json" \
  --trace "$dir/trace.json" >"$dir/out" 2>"$dir/err" || fail "bench --ep 2: $(cat "$dir/err")"
# The merged trace: one JSON file, a track per rank (pid), the EP stages on each.
python3 - "$dir/trace.json" <<'PY' || fail "bad merged trace"
import json, sys
events = json.load(open(sys.argv[1]))["traceEvents"]
for pid in (0, 1):
    names = {e["name"] for e in events if e.get("pid") == pid and e.get("ph") == "X"}
    missing = {"route", "plan", "dispatch", "experts", "combine"} - names
    assert not missing, (pid, missing)
PY
for col in rank_rows max/mean sent_MB recv_MB a2a_ms algbw busbw mpi_busbw ratio; do
  grep -q "$col" "$dir/out" || fail "no column $col: $(cat "$dir/out")"
done
rows=$(awk '$1 ~ /^[0-9]+$/ && $4 == 0' "$dir/out" | wc -l)
[ "$rows" -eq 3 ] || fail "expected 3 rows with #wrong 0: $(cat "$dir/out")"
grep -q '"rank_load"' "$dir/ep.json" || fail "no rank_load in the JSON"

# 3. run --ep 2 and 3: bitwise the single-rank output.
"$moe" init --config tiny --weights "$dir/w.safetensors" >/dev/null || fail "init"
python3 - "$dir/in.safetensors" <<'PY' || fail "writing the input"
import json, random, struct, sys
t, d = 37, 64
random.seed(5)
data = struct.pack("<%df" % (t * d), *[random.gauss(0, 1) for _ in range(t * d)])
header = json.dumps({"hidden_states": {"dtype": "F32", "shape": [t, d],
                                       "data_offsets": [0, len(data)]}}).encode()
header += b" " * ((8 - len(header) % 8) % 8)
open(sys.argv[1], "wb").write(struct.pack("<Q", len(header)) + header + data)
PY
"$moe" run --config tiny --weights "$dir/w.safetensors" --input "$dir/in.safetensors" \
  --output "$dir/one.safetensors" >/dev/null 2>"$dir/err" || fail "run: $(cat "$dir/err")"
for np in 2 3; do
  "${mpirun[@]}" -np $np "$moe" run --ep $np --config tiny --weights "$dir/w.safetensors" \
    --input "$dir/in.safetensors" --output "$dir/ep$np.safetensors" >"$dir/out" 2>"$dir/err" ||
    fail "run --ep $np: $(cat "$dir/err")"
  python3 - "$dir/one.safetensors" "$dir/ep$np.safetensors" <<'PY' || fail "run --ep $np differs"
import json, struct, sys
def tensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    body = raw[8 + n:]
    return {k: (v["dtype"], v["shape"], body[v["data_offsets"][0]:v["data_offsets"][1]])
            for k, v in header.items() if k != "__metadata__"}
a, b = tensors(sys.argv[1]), tensors(sys.argv[2])
for name in ("output", "topk_ids", "topk_weights"):
    if a[name] != b[name]:
        sys.exit("tensor %s differs" % name)
PY
done

# 4. --rebalance with --skew zipf:1.2: max/mean after < before.
"${mpirun[@]}" -np 2 "$moe" bench --config tiny --ep 2 --tokens 256 --skew zipf:1.2 \
  --rebalance --steps 6 --repeats 1 >"$dir/out" 2>"$dir/err" || fail "rebalance: $(cat "$dir/err")"
awk '$1 == 256 { if ($(NF-4) == "-" || !($(NF-4) < $(NF-5))) exit 1; found = 1 }
     END { exit found ? 0 : 1 }' "$dir/out" || fail "max/mean not lower after: $(cat "$dir/out")"
echo PASS
