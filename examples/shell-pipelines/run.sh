#!/bin/sh
# ModelForge in shell pipelines: stdin/stdout, jq over --json, $(modelforge models path ...),
# and a loop over stored versions with bench --compare. Reuses the iris model and data from
# ../iris-classifier. Needs jq (https://jqlang.org) for steps 4, 5 and 7.
set -eu
cd "$(dirname "$0")"
IRIS=../iris-classifier
FEATURES=sepal_length,sepal_width,petal_length,petal_width
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# 1. Two versions of one model: version 1 as trained, version 2 converted to opset 21
#    (convert refuses to write a model whose outputs differ). Adding an identical file
#    again is a no-op, so this script can be rerun against the same store.
modelforge models add "$IRIS/iris.onnx" --name iris-pipes --columns "$FEATURES"
modelforge convert "$IRIS/iris.onnx" --opset 21 -o "$WORK/iris-opset21.onnx"
modelforge models add "$WORK/iris-opset21.onnx" --name iris-pipes --columns "$FEATURES"

# 2. stdin to stdout: '-' (or no file at all) reads CSV from stdin; predictions stream out as
#    CSV. head may close the pipe early; predict then stops quietly.
cat "$IRIS/iris.csv" | modelforge predict iris-pipes - --keep id | head -n 4

# 3. Plain text tools on the CSV output: how many flowers of each predicted species.
modelforge predict iris-pipes "$IRIS/iris.csv" --keep id | tail -n +2 | cut -d, -f2 | sort | uniq -c

# 4. jq over --json: every reporting command writes exactly one JSON envelope to stdout.
modelforge validate iris-pipes --json | jq -r '.result.checks[] | "\(.name)\t\(.status)"'
modelforge models list iris-pipes --json |
    jq -r '.result.models[] | "\(.ref)\tai.onnx opset \(.opset_imports["ai.onnx"])\t\(.sha256[:12])"'

# 5. Errors have stable codes in the envelope (and a documented exit code), for scripts.
code=$(modelforge models path no-such-model --json 2>/dev/null | jq -r '.error.code')
echo "looking up no-such-model failed with: $code"

# 6. $(modelforge models path REF) hands the stored .onnx file to any other tool.
cp "$(modelforge models path iris-pipes:1)" "$WORK/deployed.onnx"
modelforge predict "$WORK/deployed.onnx" --data '{"features": [[5.1, 3.5, 1.4, 0.2]]}'

# 7. Benchmark every stored version against version 1, interleaved in one process (ratios
#    measured side by side are the only trustworthy ones on a shared machine).
for v in $(modelforge models list iris-pipes --json | jq -r '.result.models[].version' | sort -n); do
    modelforge bench "iris-pipes:$v" --compare iris-pipes:1 --runs 20 --batch-sizes 1,64
done

# 8. The same numbers for a script: median-latency ratios (compare / model) from --json.
modelforge bench iris-pipes:2 --compare iris-pipes:1 --runs 20 --batch-sizes 1,64 --json |
    jq -r '.result.ratios[] | select(.metric == "latency_p50_ms")
           | "batch \(.batch_size): p50 latency iris-pipes:1 / iris-pipes:2 = \(.ratio)"'
