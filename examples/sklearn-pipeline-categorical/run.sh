#!/bin/sh
# A scikit-learn pipeline with categorical string columns, one ONNX input per column:
# CSV columns are matched to model inputs by name, in whatever order the CSV has them.
set -eu
cd "$(dirname "$0")"

# 1. Parity with scikit-learn: run the ONNX model on the golden inputs saved by train.py and
#    compare with what scikit-learn predicted for them.
modelforge validate churn.onnx --inputs inputs.npz --expected expected.npz

# 2. Store it. No --columns needed: every input has the name of the column it reads.
modelforge models add churn.onnx --name churn --description "churn classifier, one input per column"

# 3. Show how customers.csv maps onto the five inputs (by name; id is kept, not fed).
modelforge predict churn customers.csv --keep id --explain

# 4. Predict: id first, then the label and one probability column per class.
modelforge predict churn customers.csv --keep id
