"""Writes a model whose output can outgrow the device: y = MatMul(a[N,1], b[1,M]), an outer
product of N x M elements from N + M inputs."""
import sys

import onnx
from onnx import TensorProto, helper

graph = helper.make_graph(
    [helper.make_node("MatMul", ["a", "b"], ["y"], name="outer")],
    "outer",
    [
        helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 1]),
        helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, "M"]),
    ],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "M"])],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
model.ir_version = 8
onnx.checker.check_model(model)
onnx.save(model, sys.argv[1])
