"""TVM (Relax ONNX frontend, built for llvm) and onnxruntime (default session) on potq's model.onnx against
the golden model: mismatching values on every node, TVM's build time and both consumers' images per second.

The test suite's nets (randomized BatchNorm, calibrated on random images), half-even rounding, random
images; every quantized value of every node and the logits are compared (potq.deploy.consumers).

    PYTHONPATH=src:. python benchmarks/tvm_consumer.py --images 64
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from tests.test_deploy import graph_of
from tests.test_graph import EXAMPLE

from potq.deploy.consumers import check_onnx, check_tvm
from potq.deploy.saturation import this_cpu

NETS = ["seed", "resnet20", "mobilenet-cifar", EXAMPLE]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--schemes", default="pot-channel,pot-tensor")
    a = p.parse_args()
    torch.set_num_threads(1)
    print(json.dumps({"cpu": this_cpu()}))
    for name in NETS:
        for scheme in a.schemes.split(","):
            graph, images = graph_of(name, scheme, "half-even", a.images)
            labels = np.zeros(len(images), dtype=np.int64)
            t = check_tvm(graph, images, labels, batch=a.batch)
            o = check_onnx(graph, images, labels, batch=a.batch, threads=1)
            row = {"net": name.split("/")[-1], "scheme": scheme, "images": len(images)}
            for key, r in (("tvm", t), ("onnxruntime", o)):
                row[key] = {
                    "mismatches": r["mismatches"],
                    "compared_values": r["compared_values"],
                    "nodes_with_mismatches": len(r["mismatch_kinds"]),
                    "images_per_second": round(len(images) / r["consumer_seconds"], 1),
                }
            row["tvm"]["build_seconds"] = round(t["build_seconds"], 1)
            print(json.dumps(row))


if __name__ == "__main__":
    main()
