"""Hostile and broken inputs, generated in code (nothing binary is committed).

Each builder takes a folder and writes one file there, returning its path. The test modules
pair them with the answer each command must give.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests import builders, model_zoo

Make = Callable[[Path], Path]
GOOD = builders.linear().SerializeToString()


def raw(name: str, data: bytes | Callable[[], bytes]) -> Make:
    def make(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(data() if callable(data) else data)
        return path

    return make


def proto(name: str, build: Callable[[], onnx.ModelProto]) -> Make:
    """Serialize without onnx.save_model's checks (hostile models are not valid)."""
    return raw(name, lambda: build().SerializeToString())


def edited(edit: Callable[[onnx.ModelProto], object]) -> Callable[[], onnx.ModelProto]:
    def build() -> onnx.ModelProto:
        model = builders.linear()
        edit(model)
        return model

    return build


# ---- byte-level damage ------------------------------------------------------------------


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            return value, pos
        shift += 7


def top_level_fields(data: bytes) -> list[tuple[int, int, int]]:
    """(field number, start, end) of every top-level protobuf field of ``data``."""
    out, pos = [], 0
    while pos < len(data):
        start = pos
        key, pos = _varint(data, pos)
        wire = key & 7
        if wire == 0:
            _, pos = _varint(data, pos)
        elif wire == 2:
            length, pos = _varint(data, pos)
            pos += length
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:  # pragma: no cover - ModelProto uses no groups
            raise ValueError(f"wire type {wire}")
        out.append((key >> 3, start, pos))
    return out


def cut_after_field(field_number: int) -> bytes:
    """GOOD truncated exactly at the end of a top-level field: a valid prefix protobuf."""
    end = next(e for f, _s, e in top_level_fields(GOOD) if f == field_number)
    return GOOD[:end]


def cut_inside_field(field_number: int, keep: int) -> bytes:
    """GOOD truncated ``keep`` bytes into the payload of a top-level field."""
    start = next(s for f, s, _e in top_level_fields(GOOD) if f == field_number)
    return GOOD[: start + keep]


def random_bytes(n: int = 4096, seed: int = 6) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def pytorch_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        zf.writestr("archive/version", b"3\n")
    return buf.getvalue()


def tensor_proto() -> bytes:
    return numpy_helper.from_array(np.ones((3, 3), np.float32), "t").SerializeToString()


# ---- structurally hostile models --------------------------------------------------------


def _vi(name: str, dtype: int = TensorProto.FLOAT, shape: list | None = None):
    return helper.make_tensor_value_info(name, dtype, ["N", 2] if shape is None else shape)


def initializer_dims_disagree() -> onnx.ModelProto:
    """W declares [4, 1] (16 bytes) but carries 2 floats (8 bytes)."""
    model = builders.linear()
    w = model.graph.initializer[0]
    w.raw_data = np.ones(2, np.float32).tobytes()
    return model


def initializer_dims_overflow() -> onnx.ModelProto:
    """W declares [2**62, 2**62, 4]: the element count overflows int64."""
    model = builders.linear()
    w = model.graph.initializer[0]
    del w.dims[:]
    w.dims.extend([2**62, 2**62, 4])
    return model


def constant_of_shape_bomb() -> onnx.ModelProto:
    """ConstantOfShape [100000, 100000] float32 = 40 GB at run time, from a tiny file."""
    shape = numpy_helper.from_array(np.array([100_000, 100_000], np.int64), "shape")
    graph = helper.make_graph(
        [
            helper.make_node("ConstantOfShape", ["shape"], ["big"], name="bomb"),
            helper.make_node("ReduceSum", ["big"], ["s"], keepdims=0),
            helper.make_node("Add", ["x", "s"], ["y"]),
        ],
        "cos_bomb",
        [_vi("x", shape=[1])],
        [_vi("y", shape=[1])],
        initializer=[shape],
    )
    return builders._model(graph)


def constant_attribute_bomb() -> onnx.ModelProto:
    """A Constant node whose tensor claims [100000, 100000] floats but carries 4 bytes."""
    big = TensorProto(name="c", data_type=TensorProto.FLOAT, dims=[100_000, 100_000])
    big.raw_data = b"\0\0\0\0"
    graph = helper.make_graph(
        [
            helper.make_node("Constant", [], ["c"], value=big, name="const"),
            helper.make_node("ReduceSum", ["c"], ["s"], keepdims=0),
            helper.make_node("Add", ["x", "s"], ["y"]),
        ],
        "const_bomb",
        [_vi("x", shape=[1])],
        [_vi("y", shape=[1])],
    )
    return builders._model(graph)


def _enc_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field, encoded by hand."""
    return _enc_varint(number << 3 | 2) + _enc_varint(len(payload)) + payload


def _graph_attr(name: str, graph: bytes) -> bytes:
    """AttributeProto{name, g, type=GRAPH} as bytes (field numbers from onnx.proto)."""
    return _field(1, name.encode()) + _field(6, graph) + _enc_varint(20 << 3) + _enc_varint(5)


def deep_nesting(kind: str, depth: int) -> bytes:
    """If or Loop nodes nested ``depth`` deep, serialized by hand.

    The protobuf runtime refuses to *build* messages this deep (its recursion limit is 100),
    so each level's NodeProto is written as bytes around the already-encoded inner graph.
    """
    cond = _vi("cond", TensorProto.BOOL, [])
    v = _vi("v", shape=[2])
    if kind == "If":
        leaf = helper.make_graph([helper.make_node("Identity", ["v"], ["r"])], "leaf", [], [
            _vi("r", shape=[2])])  # fmt: skip
        inner = leaf.SerializeToString()
        for level in range(depth):
            node = helper.make_node("If", ["cond"], ["r"], name=f"if{level}").SerializeToString()
            node += _field(5, _graph_attr("then_branch", inner))
            node += _field(5, _graph_attr("else_branch", leaf.SerializeToString()))
            shell = helper.make_graph([], f"level{level}", [], [_vi("r", shape=[2])])
            inner = _field(1, node) + shell.SerializeToString()
        outer = helper.make_graph([], "nested_if", [cond, v], [_vi("r", shape=[2])])
    else:
        body_io = ([_vi("i", TensorProto.INT64, []), _vi("cond_in", TensorProto.BOOL, []), v],
                   [_vi("cond_out", TensorProto.BOOL, []), _vi("v_out", shape=[2])])  # fmt: skip
        passthrough = [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Identity", ["v"], ["v_out"]),
        ]
        inner = helper.make_graph(passthrough, "leaf", *body_io).SerializeToString()
        one = numpy_helper.from_array(np.array(1, np.int64), "one")
        for level in range(depth):
            node = helper.make_node(
                "Loop", ["one", "cond_in", "v"], ["v_out"], name=f"loop{level}"
            ).SerializeToString()
            node += _field(5, _graph_attr("body", inner))
            shell = helper.make_graph(passthrough[:1], f"level{level}", *body_io)
            inner = _field(1, node) + shell.SerializeToString()
        outer = helper.make_graph(
            [], "nested_loop", [_vi("cond_in", TensorProto.BOOL, []), v], [_vi("v_out", shape=[2])],
            initializer=[one],
        )  # fmt: skip
    # the main graph: the outermost level's node(s), plus the outer graph's inputs/outputs
    model = builders._model(outer)
    head = model.SerializeToString()
    out = b""
    for number, start, end in top_level_fields(head):
        if number == 7:
            out += _field(7, _top_nodes(inner) + model.graph.SerializeToString())
        else:
            out += head[start:end]
    return out


def _top_nodes(graph_bytes: bytes) -> bytes:
    """The ``node`` fields (number 1) of an encoded GraphProto, still encoded."""
    return b"".join(graph_bytes[s:e] for f, s, e in top_level_fields(graph_bytes) if f == 1)


def recursive_functions() -> onnx.ModelProto:
    """Local function f calls g, g calls f: inlining would never end."""
    f = helper.make_function(
        "local", "f", ["a"], ["b"], [helper.make_node("g", ["a"], ["b"], domain="local")],
        [helper.make_opsetid("", 17), helper.make_opsetid("local", 1)],
    )  # fmt: skip
    g = helper.make_function(
        "local", "g", ["a"], ["b"], [helper.make_node("f", ["a"], ["b"], domain="local")],
        [helper.make_opsetid("", 17), helper.make_opsetid("local", 1)],
    )  # fmt: skip
    graph = helper.make_graph(
        [helper.make_node("f", ["x"], ["y"], domain="local", name="call_f")],
        "recursive",
        [_vi("x")],
        [_vi("y")],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)],
        functions=[f, g],
    )
    model.ir_version = 8
    return model


def many_nodes(n: int = 100_000) -> onnx.ModelProto:
    """A chain of ``n`` Relu nodes: big but valid."""
    nodes = [
        helper.make_node("Relu", ["x" if i == 0 else f"t{i - 1}"], [f"t{i}" if i < n - 1 else "y"])
        for i in range(n)
    ]
    graph = helper.make_graph(nodes, "chain", [_vi("x")], [_vi("y")])
    return builders._model(graph)


ANSI = "\x1b[31mred\x1b[0m\x1b]0;owned\x07\nline2\r\u202eevil"


def ansi_everywhere() -> onnx.ModelProto:
    """Escape sequences and newlines in names, doc strings and metadata (still a valid model)."""
    model = builders.linear()
    model.doc_string = "doc " + ANSI
    model.producer_name = "prod " + ANSI
    model.graph.name = "graph " + ANSI
    model.graph.doc_string = ANSI
    model.graph.node[0].name = "node " + ANSI
    model.graph.node[0].doc_string = ANSI
    onnx.helper.set_model_props(model, {"key " + ANSI: "value " + ANSI})
    return model


def ansi_in_failing_input() -> onnx.ModelProto:
    """An undefined input whose name carries escape sequences: the error message quotes it."""
    model = builders.linear()
    model.graph.node[0].input[1] = "ghost" + ANSI
    return model


# the table of models: (id, builder); expectations live in test_models.py
MODELS: dict[str, Make] = {
    "empty": raw("empty.onnx", b""),
    "random": raw("random.onnx", random_bytes),
    "truncated_1_byte": raw("t1.onnx", GOOD[:1]),
    "truncated_half": raw("thalf.onnx", GOOD[: len(GOOD) // 2]),
    "truncated_last_byte": raw("tlast.onnx", GOOD[:-1]),
    "truncated_inside_graph": raw("tgraph.onnx", lambda: cut_inside_field(7, 5)),
    "truncated_at_field_boundary_before_graph": raw("tb1.onnx", lambda: cut_after_field(2)),
    "truncated_at_field_boundary_after_graph": raw("tb2.onnx", lambda: cut_after_field(7)),
    "tensorproto": raw("tensor.onnx", tensor_proto),
    "text_protobuf": raw("text.onnx", lambda: str(builders.linear()).encode()),
    "pytorch_zip": raw("torch.onnx", pytorch_zip),
    "pickle": raw("pickle.onnx", b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00}\x94."),
    "no_graph": proto("nograph.onnx", edited(lambda m: m.ClearField("graph"))),
    "no_opset_import": proto("noopset.onnx", edited(lambda m: m.ClearField("opset_import"))),
    "duplicate_opset_import": proto(
        "dupopset.onnx", edited(lambda m: m.opset_import.append(helper.make_opsetid("", 13)))
    ),
    "opset_far_beyond": proto(
        "opset99.onnx", edited(lambda m: setattr(m.opset_import[0], "version", 99))
    ),
    "ir_far_beyond": proto("ir99.onnx", model_zoo.ir_too_new),
    "ir_0": proto("ir0.onnx", edited(lambda m: setattr(m, "ir_version", 0))),
    "unknown_op": proto(
        "unknown.onnx", edited(lambda m: setattr(m.graph.node[0], "op_type", "NoSuchOp"))
    ),
    "custom_domain_op": proto("custom.onnx", model_zoo.custom_domain),
    "cycle": proto("cycle.onnx", model_zoo.cycle),
    "undefined_input": proto("undef.onnx", model_zoo.undefined_input),
    "duplicate_outputs": proto("dupout.onnx", model_zoo.duplicate_outputs),
    "negative_dims": proto("negdims.onnx", model_zoo.negative_dims),
    "initializer_dims_disagree": proto("initdis.onnx", initializer_dims_disagree),
    "initializer_dims_overflow": proto("initovf.onnx", initializer_dims_overflow),
    "constant_of_shape_40GB": proto("cosbomb.onnx", constant_of_shape_bomb),
    "constant_attr_40GB": proto("constbomb.onnx", constant_attribute_bomb),
    "expand_400GB": proto("expand.onnx", model_zoo.expand_bomb),
    "if_nesting_30": raw("if30.onnx", lambda: deep_nesting("If", 30)),
    "if_nesting_200": raw("if200.onnx", lambda: deep_nesting("If", 200)),
    "loop_nesting_30": raw("loop30.onnx", lambda: deep_nesting("Loop", 30)),
    "loop_nesting_200": raw("loop200.onnx", lambda: deep_nesting("Loop", 200)),
    "recursive_functions": proto("recursive.onnx", recursive_functions),
    "ansi_in_failing_name": proto("ansifail.onnx", ansi_in_failing_input),
}
