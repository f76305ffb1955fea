#!/usr/bin/env python3
"""Writes the ONNX backend node test cases to disk for the Rust test runner.

The `onnx` pip package no longer ships the data files of its node tests; it
generates them: `collect_testcases(None)` yields each case's model and its
input/output arrays. This script writes every case whose inputs and outputs
are plain tensors as

    OUT/<case>/model.onnx
    OUT/<case>/test_data_set_<k>/input_<i>.pb, output_<i>.pb   (TensorProto)

plus OUT/index.json: one entry per case with its op types, tolerances and, for
cases that cannot be written as tensors, why.

Usage: generate.py OUT_DIR
"""
import json
import os
import sys
import warnings

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.backend.test.case.node import collect_testcases


def op_types(graph):
    ops = set()
    for node in graph.node:
        ops.add(node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}")
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                ops |= op_types(attr.g)
    return ops


def to_tensor_proto(value, name):
    if isinstance(value, onnx.TensorProto):
        t = onnx.TensorProto()
        t.CopyFrom(value)
        t.name = name
        return t
    if isinstance(value, np.generic):
        value = np.asarray(value)
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{type(value).__name__} value")
    if value.dtype == object:
        raise TypeError("object/string array")
    return numpy_helper.from_array(value, name)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    warnings.simplefilter("ignore")
    index = []
    for case in collect_testcases(None):
        entry = {
            "name": case.name,
            "ops": sorted(op_types(case.model.graph)),
            "opset": max((o.version for o in case.model.opset_import if o.domain in ("", "ai.onnx")), default=0),
            "rtol": case.rtol,
            "atol": case.atol,
        }
        try:
            model = case.model
            in_names = [i.name for i in model.graph.input]
            out_names = [o.name for o in model.graph.output]
            sets = []
            for inputs, outputs in case.data_sets:
                sets.append(
                    (
                        [to_tensor_proto(v, n) for v, n in zip(inputs, in_names)],
                        [to_tensor_proto(v, n) for v, n in zip(outputs, out_names)],
                    )
                )
            case_dir = os.path.join(out, case.name)
            os.makedirs(case_dir, exist_ok=True)
            with open(os.path.join(case_dir, "model.onnx"), "wb") as f:
                f.write(model.SerializeToString())
            for k, (ins, outs) in enumerate(sets):
                d = os.path.join(case_dir, f"test_data_set_{k}")
                os.makedirs(d, exist_ok=True)
                for i, t in enumerate(ins):
                    with open(os.path.join(d, f"input_{i}.pb"), "wb") as f:
                        f.write(t.SerializeToString())
                for i, t in enumerate(outs):
                    with open(os.path.join(d, f"output_{i}.pb"), "wb") as f:
                        f.write(t.SerializeToString())
            entry["data_sets"] = len(sets)
        except Exception as e:  # noqa: BLE001 - recorded in the index, not hidden
            entry["unwritable"] = f"{type(e).__name__}: {e}"
        index.append(entry)
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump({"onnx_version": onnx.__version__, "cases": index}, f, indent=1)
    written = sum(1 for e in index if "unwritable" not in e)
    print(f"wrote {written} of {len(index)} ONNX node test cases to {out}")


if __name__ == "__main__":
    main()
