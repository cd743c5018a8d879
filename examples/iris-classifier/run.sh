#!/bin/sh
# The README quickstart's main job: store, validate, inspect and predict with a
# scikit-learn iris classifier converted to ONNX (ZipMap class probabilities).
set -eu
cd "$(dirname "$0")"

# 1. Store it: validated on the way in; --columns records which CSV columns feed 'features'.
modelforge models add iris.onnx --name iris --alias prod \
    --columns sepal_length,sepal_width,petal_length,petal_width \
    --description "iris species classifier"

# 2. Validate it again: file, structure, shapes, runtime compatibility, a smoke run.
modelforge validate iris:prod

# 3. Look inside: inputs, outputs, opsets, operators.
modelforge inspect iris:prod

# 4. Predict: the id column is copied through, probabilities become one column per class.
modelforge predict iris:prod iris.csv --keep id
