"""Writes the two models of the OpenCL defects found from outside (argv: output folder):
- clip_min_gt_max.onnx: Clip with min (1.0) > max (0.5); ONNX says every element is max;
- batchnorm_training.onnx: BatchNormalization in training mode (three outputs), which no
  kernel and no CPU backend of the OpenCL engine can run: the model must fail at load."""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

out = sys.argv[1]

clip = helper.make_graph(
    [helper.make_node("Clip", ["x", "lo", "hi"], ["y"], name="clip")],
    "clip_min_gt_max",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
    [numpy_helper.from_array(np.array(1.0, np.float32), "lo"),
     numpy_helper.from_array(np.array(0.5, np.float32), "hi")],
)
model = helper.make_model(clip, opset_imports=[helper.make_opsetid("", 13)])
model.ir_version = 8
onnx.checker.check_model(model)
onnx.save(model, os.path.join(out, "clip_min_gt_max.onnx"))

c = 3
params = [numpy_helper.from_array(np.full(c, v, np.float32), n)
          for n, v in [("scale", 1.0), ("bias", 0.0), ("mean", 0.0), ("var", 1.0)]]
bn = helper.make_graph(
    [helper.make_node("BatchNormalization", ["x", "scale", "bias", "mean", "var"],
                      ["y", "running_mean", "running_var"], training_mode=1, name="bn")],
    "batchnorm_training",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, c, 2, 2])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, c, 2, 2]),
     helper.make_tensor_value_info("running_mean", TensorProto.FLOAT, [c]),
     helper.make_tensor_value_info("running_var", TensorProto.FLOAT, [c])],
    params,
)
model = helper.make_model(bn, opset_imports=[helper.make_opsetid("", 15)])
model.ir_version = 8
onnx.checker.check_model(model)
onnx.save(model, os.path.join(out, "batchnorm_training.onnx"))
