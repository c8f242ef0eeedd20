"""A plain eager PyTorch loop of a `time_to_robust.py` recipe: the twin it times.

PGD-AT with an HE head, written as a PyTorch user would write it, on the
arrays he-keras trains on (`--data`, written by `time_to_robust.py`):

- the net of `he_keras.models.small_cnn` with its defaults: 3x3 ReLU
  convolutions of 32 and 64 filters ("same" padding), 2x2 max-pooling,
  flattened in Keras' channels-last order, a 128-unit ReLU layer, then the
  HE head `s * W~^T z~` (features and weight columns L2-normalized with the
  epsilon of `HypersphereDense`);
- the training attack of `he_keras.training.PGDAT`: L-inf PGD on the
  cross-entropy of the logits, a uniform random start in the eps-ball,
  signed-gradient steps, projection and clipping to [0, 1];
- the outer loss of PGDAT with an HE head: cross-entropy of
  `s * (cos(theta) - m * 1_y)` on the adversarial batch alone;
- Adam with Keras' defaults (betas 0.9 / 0.999, epsilon 1e-7), a constant
  learning rate or, with `--lr_decay_epochs`, he-keras' piecewise schedule
  (times `--lr_decay_factor` after `int(epoch * steps_per_epoch)` updates),
  batches of a fresh shuffle every epoch, the last one smaller;
- with `--eps_warmup_epochs`, he-keras' eps warm-up: before batch `b` of
  epoch `e`, eps and step size are `min(1, (e + b / steps_per_epoch) /
  warmup)` of theirs.

`--autocast` runs the forward passes under bfloat16 autocast (the head and
the losses in float32), the counterpart of he-keras'
`--precision=mixed_bfloat16`. Only the training loop is timed (the data are
in memory as tensors). The trained weights are written in Keras' layouts (`--output`, an .npz) so that
`time_to_robust.py` evaluates them with he-keras' AutoAttack on the same
footing as the he-keras model. This file needs only torch and NumPy.

Usage:
  python bench/torch_twin.py --data=split.npz --output=weights.npz --seed=0
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# `HypersphereDense`'s epsilon under the normalizations' square roots.
NORM_EPSILON = 1e-12


class SmallCNNHE(nn.Module):
    """`small_cnn(head="he")` of he-keras, in PyTorch."""

    def __init__(self, size: int, channels: int, classes: int, s: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.dense = nn.Linear(64 * (size // 2) ** 2, 128)
        self.kernel = nn.Parameter(torch.empty(128, classes))
        nn.init.xavier_uniform_(self.kernel)
        self.s = s

    def cosine(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2)  # NHWC images, as Keras takes them.
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        z = F.relu(self.dense(x.permute(0, 2, 3, 1).flatten(1))).float()
        # The head in float32 under autocast too, as `HypersphereDense` computes.
        with torch.autocast("cpu", enabled=False):
            return self.head(z)

    def head(self, z: torch.Tensor) -> torch.Tensor:
        z = z * torch.rsqrt(z.square().sum(1, keepdim=True) + NORM_EPSILON)
        w = self.kernel * torch.rsqrt(self.kernel.square().sum(0, keepdim=True) + NORM_EPSILON)
        return z @ w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.s * self.cosine(x)

    def keras_weights(self) -> list:
        """The weights in the order (`model.weights`) and layouts of he-keras' `small_cnn`."""
        def conv(layer):
            return [layer.weight.detach().permute(2, 3, 1, 0).numpy(), layer.bias.detach().numpy()]

        return [
            *conv(self.conv1), *conv(self.conv2),
            self.dense.weight.detach().T.numpy(), self.dense.bias.detach().numpy(),
            self.kernel.detach().numpy(), np.float32(self.s),
        ]


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, step: float,
        steps: int, generator: torch.Generator, autocast: bool = False) -> torch.Tensor:
    """L-inf PGD on the cross-entropy, uniform start, signed steps (the
    forward passes under bfloat16 autocast if `autocast`)."""
    delta = (torch.rand(x.shape, generator=generator) * 2 - 1) * eps
    x_adv = (x + delta).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = F.cross_entropy(model(x_adv), y)
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = x_adv.detach() + step * grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
    return x_adv.detach()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help=".npz with x_train (NHWC) and y_train")
    parser.add_argument("--output", required=True, help=".npz for the trained weights")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.002)
    parser.add_argument("--eps", type=float, default=0.3)
    parser.add_argument("--step_size", type=float, default=0.075)
    parser.add_argument("--steps", type=int, default=7)
    parser.add_argument("--s", type=float, default=15.0)
    parser.add_argument("--m", type=float, default=0.2)
    parser.add_argument("--eps_warmup_epochs", type=float, default=0.0)
    parser.add_argument("--lr_decay_epochs", default="", help="comma-separated epochs, e.g. 10,13")
    parser.add_argument("--lr_decay_factor", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: torch's default)")
    parser.add_argument("--autocast", action="store_true",
                        help="bfloat16 autocast of the forward passes (he-keras' --precision=mixed_bfloat16)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    data = np.load(args.data)
    x = torch.from_numpy(data["x_train"].astype(np.float32))
    y = torch.from_numpy(data["y_train"].astype(np.int64))
    model = SmallCNNHE(x.shape[1], x.shape[3], int(y.max()) + 1, args.s)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, eps=1e-7)
    steps_per_epoch = -(-len(x) // args.batch_size)
    bounds = [int(float(e) * steps_per_epoch) for e in args.lr_decay_epochs.split(",") if e]
    updates = 0
    started = time.perf_counter()
    epoch_seconds = []
    for epoch in range(args.epochs):
        epoch_began = time.perf_counter()
        order = torch.randperm(len(x), generator=generator)
        for batch, lo in enumerate(range(0, len(x), args.batch_size)):
            idx = order[lo : lo + args.batch_size]
            xb, yb = x[idx], y[idx]
            share = (min(1.0, (epoch + batch / steps_per_epoch) / args.eps_warmup_epochs)
                     if args.eps_warmup_epochs > 0 else 1.0)
            for group in optimizer.param_groups:
                group["lr"] = args.lr * args.lr_decay_factor ** sum(updates > b for b in bounds)
            model.eval()
            x_adv = pgd(model, xb, yb, share * args.eps, share * args.step_size, args.steps, generator,
                        args.autocast)
            model.train()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.autocast):
                cosine = model.cosine(x_adv)
                loss = F.cross_entropy(args.s * (cosine - args.m * F.one_hot(yb, cosine.shape[1])), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            updates += 1
        epoch_seconds.append(time.perf_counter() - epoch_began)
    train_seconds = time.perf_counter() - started
    np.savez(args.output, *model.keras_weights())
    print(json.dumps({"train_seconds": train_seconds, "epoch_seconds": epoch_seconds,
                      "threads": torch.get_num_threads(),
                      "autocast": args.autocast, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
