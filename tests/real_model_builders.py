"""onnx.helper rebuilds of the structures found in models exported from PyTorch (dynamo and
TorchScript exporters), for tests/test_real_models.py. torch is not in the CI environment,
so each builder reproduces the part of a real export that mattered."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _model(graph: onnx.GraphProto, opset: int, ir_version: int = 10) -> onnx.ModelProto:
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="pytorch"
    )
    model.ir_version = ir_version
    return model


def two_batches() -> onnx.ModelProto:
    """``scores = (x @ W) @ table.T``: x [batch, 4] and table [k, 4], two different first
    dimensions (a query batch scored against a table of k rows), output [batch, k]."""
    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(4, 4)).astype("f"), "W")
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["xw"]),
        helper.make_node("Transpose", ["table"], ["tt"], perm=[1, 0]),
        helper.make_node("MatMul", ["xw", "tt"], ["scores"]),
    ]
    graph = helper.make_graph(
        nodes,
        "two_batches",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("table", TensorProto.FLOAT, ["k", 4]),
        ],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", "k"])],
        [w],
    )
    return _model(graph, 20)


def mean_opset20() -> onnx.ModelProto:
    """What the dynamo exporter writes for ``y.mean()`` and ``x.mean((1,))``: opset-18+
    ReduceMean nodes carrying ``noop_with_empty_axes=0`` (one with an ``axes`` input, one
    over every axis)."""
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    nodes = [
        helper.make_node("ReduceMean", ["x", "axes"], ["row_mean"], keepdims=0,
                         noop_with_empty_axes=0),
        helper.make_node("ReduceMean", ["x"], ["all_mean"], keepdims=0,
                         noop_with_empty_axes=0),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes,
        "mean",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [
            helper.make_tensor_value_info("row_mean", TensorProto.FLOAT, ["batch"]),
            helper.make_tensor_value_info("all_mean", TensorProto.FLOAT, []),
        ],
        [axes],
    )
    return _model(graph, 20)


def small_cnn(scale: float = 1.0) -> onnx.ModelProto:
    """Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm -> Softmax on NCHW float input
    [batch, 3, 8, 8]; ``scale`` multiplies the classifier weights (a retrained head: same
    graph, same shapes, other numbers)."""
    rng = np.random.default_rng(0)
    conv_w = numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype("f"), "conv.weight")
    fc_w = numpy_helper.from_array((rng.normal(size=(5, 4)) * scale).astype("f"), "fc.weight")
    fc_b = numpy_helper.from_array(np.zeros(5, dtype="f"), "fc.bias")
    nodes = [
        helper.make_node("Conv", ["image", "conv.weight"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 5])],
        [conv_w, fc_w, fc_b],
    )
    return _model(graph, 17, ir_version=8)


def traced_seq(seq: int = 7) -> onnx.ModelProto:
    """The TorchScript exporter's view of a TransformerEncoderLayer: inputs declared
    [batch, seq] but a Reshape with the traced sequence length baked in, so the model only
    runs when seq == 7 (the length of the example input)."""
    shape = numpy_helper.from_array(np.array([seq, -1], dtype=np.int64), "traced_shape")
    nodes = [
        helper.make_node("Cast", ["input_ids"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["f"], ["t"], perm=[1, 0]),
        helper.make_node("Reshape", ["t", "traced_shape"], ["r"]),
        helper.make_node("Transpose", ["r"], ["hidden"], perm=[1, 0]),
    ]
    graph = helper.make_graph(
        nodes,
        "encoder",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["batch", "seq"])],
        [shape],
    )
    return _model(graph, 17, ir_version=8)


def sklearn_pipeline(c: float = 1.0, rows: int = 40) -> tuple[onnx.ModelProto, object]:
    """A ColumnTransformer pipeline (OneHotEncoder on string columns 'city' and 'plan',
    StandardScaler on 'age' and 'income') + LogisticRegression, through skl2onnx: one
    [None, 1] input per column; and its training frame. ``c``/``rows``: retrain it with
    another regularisation on the first ``rows`` rows (same graph, other coefficients)."""
    import pandas as pd
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(0)
    n = 40
    frame = pd.DataFrame(
        {
            "city": rng.choice(["paris", "rome", "oslo"], n),
            "plan": rng.choice(["free", "pro"], n),
            "age": rng.normal(40, 10, n).astype(np.float32),
            "income": rng.normal(5e4, 1e4, n).astype(np.float32),
        }
    )
    y = ((frame.age > 40) ^ (frame.city == "rome")).astype(int).to_numpy()
    pre = ColumnTransformer(
        [
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["city", "plan"]),
            ("num", StandardScaler(), ["age", "income"]),
        ]
    )
    pipe = Pipeline([("pre", pre), ("clf", LogisticRegression(C=c))])
    pipe.fit(frame.iloc[:rows], y[:rows])
    types = [
        ("city", StringTensorType([None, 1])),
        ("plan", StringTensorType([None, 1])),
        ("age", FloatTensorType([None, 1])),
        ("income", FloatTensorType([None, 1])),
    ]
    return convert_sklearn(pipe, initial_types=types), frame


def topk_declared_five() -> onnx.ModelProto:
    """TopK with k given at run time, outputs declared [N, 5] (what the exporter saw with
    k=5): shape inference cannot tell, and a run with another k gives [N, k]."""
    nodes = [helper.make_node("TopK", ["x", "k"], ["values", "indices"], axis=1)]
    graph = helper.make_graph(
        nodes,
        "topk",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6]),
            helper.make_tensor_value_info("k", TensorProto.INT64, [1]),
        ],
        [
            helper.make_tensor_value_info("values", TensorProto.FLOAT, ["N", 5]),
            helper.make_tensor_value_info("indices", TensorProto.INT64, ["N", 5]),
        ],
    )
    return _model(graph, 17, ir_version=8)


def keras_two_inputs() -> onnx.ModelProto:
    """What tf2onnx writes for a two-input Keras model: TensorFlow names with ':0' and every
    unknown (batch) dim named on its own (unk__12, unk__14, unk__15)."""
    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(7, 2)).astype("f"), "W")
    nodes = [
        helper.make_node("Concat", ["input_1:0", "input_2:0"], ["c"], axis=1),
        helper.make_node("MatMul", ["c", "W"], ["m"]),
        helper.make_node("Softmax", ["m"], ["dense/Softmax:0"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tf2onnx",
        [
            helper.make_tensor_value_info("input_1:0", TensorProto.FLOAT, ["unk__12", 4]),
            helper.make_tensor_value_info("input_2:0", TensorProto.FLOAT, ["unk__14", 3]),
        ],
        [helper.make_tensor_value_info("dense/Softmax:0", TensorProto.FLOAT, ["unk__15", 2])],
        [w],
    )
    return _model(graph, 13, ir_version=7)


def masked_softmax() -> onnx.ModelProto:
    """The attention step of a transformer export: scores where attention_mask == 0 are
    -inf, then Softmax over the sequence: a row whose mask is all zeros (all padding) gives
    NaN, as torch's exports do."""
    ninf = numpy_helper.from_array(np.array(-np.inf, dtype=np.float32), "ninf")
    zero = numpy_helper.from_array(np.array(0, dtype=np.int64), "zero")
    nodes = [
        helper.make_node("Cast", ["input_ids"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Equal", ["attention_mask", "zero"], ["pad"]),
        helper.make_node("Where", ["pad", "ninf", "f"], ["scores"]),
        helper.make_node("Softmax", ["scores"], ["weights"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "attention",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("weights", TensorProto.FLOAT, ["batch", "seq"])],
        [ninf, zero],
    )
    return _model(graph, 17, ir_version=8)


def bert_embeddings() -> onnx.ModelProto:
    """A BERT-style embedding block as exported from transformers: word embeddings (vocab
    100), token type embeddings with 2 rows (segments A/B) and an attention_mask input,
    each int64 [batch, seq]; token_type_ids outside {0, 1} make Gather fail."""
    rng = np.random.default_rng(0)
    words = numpy_helper.from_array(rng.normal(size=(100, 8)).astype("f"), "word_embeddings")
    types = numpy_helper.from_array(rng.normal(size=(2, 8)).astype("f"), "token_type_embeddings")
    nodes = [
        helper.make_node("Gather", ["word_embeddings", "input_ids"], ["w"]),
        helper.make_node("Cast", ["token_type_ids"], ["tt"], to=TensorProto.INT64),
        helper.make_node("Gather", ["token_type_embeddings", "tt"], ["t"]),
        helper.make_node("Add", ["w", "t"], ["e"]),
        helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["m", "axis"], ["m3"]),
        helper.make_node("Mul", ["e", "m3"], ["last_hidden_state"]),
    ]
    axis = numpy_helper.from_array(np.array([2], dtype=np.int64), "axis")
    ids = ["batch", "sequence"]
    graph = helper.make_graph(
        nodes,
        "bert",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ids),
            helper.make_tensor_value_info("token_type_ids", TensorProto.INT64, ids),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ids),
        ],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, [*ids, 8])],
        [words, types, axis],
    )
    return _model(graph, 17, ir_version=8)


def decoder_with_cache() -> onnx.ModelProto:
    """A GPT-2 style decoder step as Hugging Face exports it with a KV cache: past_key
    [batch, 2, past_sequence_length, 4], input_ids [batch, sequence_length] and an
    attention_mask whose length is named by an expression,
    'past_sequence_length + sequence_length'; the scores add the mask, so its length must
    be past + new tokens."""
    rng = np.random.default_rng(0)
    emb = numpy_helper.from_array(rng.normal(size=(50, 8)).astype("f"), "wte")
    heads = numpy_helper.from_array(np.array([0, 0, 2, 4], dtype=np.int64), "heads")
    axes = numpy_helper.from_array(np.array([1, 2], dtype=np.int64), "axes")
    total = "past_sequence_length + sequence_length"
    nodes = [
        helper.make_node("Gather", ["wte", "input_ids"], ["h"]),
        helper.make_node("Reshape", ["h", "heads"], ["h4"]),
        helper.make_node("Transpose", ["h4"], ["q"], perm=[0, 2, 1, 3]),
        helper.make_node("Concat", ["past_key", "q"], ["present_key"], axis=2),
        helper.make_node("Transpose", ["present_key"], ["kt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q", "kt"], ["scores"]),
        helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["m", "axes"], ["m4"]),
        helper.make_node("Add", ["scores", "m4"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "decoder",
        [
            helper.make_tensor_value_info(
                "input_ids", TensorProto.INT64, ["batch_size", "sequence_length"]
            ),
            helper.make_tensor_value_info(
                "attention_mask", TensorProto.INT64, ["batch_size", total]
            ),
            helper.make_tensor_value_info(
                "past_key", TensorProto.FLOAT, ["batch_size", 2, "past_sequence_length", 4]
            ),
        ],
        [
            helper.make_tensor_value_info(
                "logits", TensorProto.FLOAT, ["batch_size", 2, "sequence_length", total]
            ),
            helper.make_tensor_value_info(
                "present_key", TensorProto.FLOAT, ["batch_size", 2, total, 4]
            ),
        ],
        [emb, heads, axes],
    )
    return _model(graph, 17, ir_version=8)


def sklearn_default_onehot() -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """scikit-learn's default OneHotEncoder (handle_unknown='error') through skl2onnx: the
    ONNX OneHotEncoder gets zeros=0 and fails on any value it was not fitted on. One model
    with string columns 'city'/'plan' [None, 1], one with a 2-D int64 input 'X' [None, 2]
    whose two columns have their own categories ({10, 20, 30} and {1, 2})."""
    import pandas as pd
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, Int64TensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    rng = np.random.default_rng(0)
    n = 60
    frame = pd.DataFrame(
        {
            "city": rng.choice(["paris", "rome", "oslo"], n),
            "plan": rng.choice(["free", "pro"], n),
            "age": rng.normal(40, 10, n).astype(np.float32),
        }
    )
    y = (frame.age > 40).astype(int).to_numpy()
    pre = ColumnTransformer(
        [("cat", OneHotEncoder(), ["city", "plan"]), ("num", "passthrough", ["age"])]
    )
    pipe = Pipeline([("pre", pre), ("clf", LogisticRegression())]).fit(frame, y)
    strings = convert_sklearn(
        pipe,
        initial_types=[
            ("city", StringTensorType([None, 1])),
            ("plan", StringTensorType([None, 1])),
            ("age", FloatTensorType([None, 1])),
        ],
    )
    x = np.stack([rng.choice([10, 20, 30], n), rng.choice([1, 2], n)], axis=1).astype(np.int64)
    ints = Pipeline([("ohe", OneHotEncoder()), ("clf", LogisticRegression())]).fit(x, y)
    codes = convert_sklearn(ints, initial_types=[("X", Int64TensorType([None, 2]))])
    return strings, codes
