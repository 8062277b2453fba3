"""Writes a small model whose middle op (Abs) has no OpenCL kernel, so the OpenCL engine
splits it device -> CPU -> device:  y = Softmax(Relu(x @ W1 + b1) ... Abs ... @ W2 + b2)."""
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(7)
w1 = numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), "w1")
b1 = numpy_helper.from_array(rng.standard_normal((16,)).astype(np.float32), "b1")
w2 = numpy_helper.from_array(rng.standard_normal((16, 4)).astype(np.float32), "w2")
b2 = numpy_helper.from_array(rng.standard_normal((4,)).astype(np.float32), "b2")
nodes = [
    helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1"),
    helper.make_node("Tanh", ["h"], ["t"], name="tanh"),
    helper.make_node("Abs", ["t"], ["a"], name="mid_abs"),
    helper.make_node("Gemm", ["a", "w2", "b2"], ["z"], name="fc2"),
    helper.make_node("Softmax", ["z"], ["y"], name="softmax", axis=1),
]
graph = helper.make_graph(
    nodes,
    "partitioned",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
    [w1, b1, w2, b2],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
model.ir_version = 8
onnx.checker.check_model(model)
onnx.save(model, sys.argv[1])
