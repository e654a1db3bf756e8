"""Run under torchrun: evaluate a bundle's weights on the digits test split, sharded over the processes.

Usage: python -m torch.distributed.run --standalone --nproc-per-node 2 _dist_eval.py BUNDLE OUT.npz
Rank 0 writes the gathered predictions and the top-1 to OUT.npz. The environment is read here, at the edge,
exactly as `imgcls train` reads it under an external launcher.
"""

import os
import sys

import numpy as np

from imgcls.bundle import load_bundle
from imgcls.config import DataConfig
from imgcls.data.datasets import load_dataset
from imgcls.models.io import load_model
from imgcls.train import distributed
from imgcls.train.evaluate import evaluate


def main(bundle_dir: str, out: str) -> None:
    env = distributed.DistEnv.from_environ(os.environ)
    distributed.init(env, "cpu", timeout_s=60)
    bundle = load_bundle(bundle_dir)
    size = bundle.input.size[0]
    ds = load_dataset(DataConfig(name="digits", img_size=size), seed=0)
    model = load_model(bundle)
    # an odd batch size and 179 images: shards of 90 and 89, batches that do not divide them
    ev = evaluate(model, ds.test.images, ds.test.labels, bundle.input, num_classes=10, batch_size=37, dist=env)
    if env.is_primary:
        np.savez(out, predictions=ev.predictions, top1=np.array(ev.top1), count=np.array(ev.count))
    distributed.shutdown(env)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
