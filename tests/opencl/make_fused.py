"""Writes a model of the chains the OpenCL engine fuses into the kernel that produces them:
Conv -> Relu, Conv -> Add (residual) -> Relu, Conv -> Clip, Conv -> Add (broadcast: not
fusable into the epilogue, added after), Gemm -> Sigmoid, Gemm -> Tanh, MatMul, and a Relu
that must stay (its input is also an output of the model)."""
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(11)


def const(name, *shape, scale=0.5):
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


inits = [
    const("w1", 6, 3, 3, 3), const("b1", 6),
    const("w2", 6, 6, 3, 3), const("b2", 6),
    const("w3", 6, 6, 1, 1),
    const("w4", 4, 6, 3, 3), const("b4", 4), const("shift", 1, 4, 1, 1),
    numpy_helper.from_array(np.array(-0.5, np.float32), "lo"),
    numpy_helper.from_array(np.array(0.75, np.float32), "hi"),
    const("g1", 10, 4 * 9 * 9, scale=0.1), const("gb1", 10),
    const("g2", 10, 7), const("gb2", 7),
    const("m1", 7, 5),
]
nodes = [
    helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="c1", pads=[1, 1, 1, 1]),
    helper.make_node("Relu", ["c1"], ["r1"], name="r1"),
    helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="c2", pads=[1, 1, 1, 1]),
    helper.make_node("Add", ["r1", "c2"], ["a1"], name="a1"),
    helper.make_node("Relu", ["a1"], ["r2"], name="r2"),
    helper.make_node("Conv", ["r2", "w3"], ["c3"], name="c3"),
    helper.make_node("Clip", ["c3", "lo", "hi"], ["k3"], name="k3"),
    helper.make_node("Conv", ["k3", "w4", "b4"], ["c4"], name="c4", strides=[1, 1]),
    helper.make_node("Add", ["c4", "shift"], ["a4"], name="a4"),
    helper.make_node("Relu", ["a4"], ["r4"], name="r4"),
    helper.make_node("Flatten", ["r4"], ["f"], name="flat"),
    helper.make_node("Gemm", ["f", "g1", "gb1"], ["h1"], name="fc1", transB=1),
    helper.make_node("Sigmoid", ["h1"], ["s1"], name="sig"),
    helper.make_node("Gemm", ["s1", "g2", "gb2"], ["h2"], name="fc2"),
    helper.make_node("Tanh", ["h2"], ["t2"], name="tanh"),
    helper.make_node("MatMul", ["t2", "m1"], ["y"], name="mm"),
    helper.make_node("Relu", ["h2"], ["z"], name="relu_of_output"),
]
graph = helper.make_graph(
    nodes,
    "fused",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 11, 11])],
    [
        helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5]),
        helper.make_tensor_value_info("h2", TensorProto.FLOAT, ["N", 7]),
        helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 7]),
    ],
    inits,
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
model.ir_version = 8
onnx.checker.check_model(model)
onnx.save(model, sys.argv[1])
