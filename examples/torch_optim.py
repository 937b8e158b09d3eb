"""bpcore's gradients driving a ``torch.optim`` optimizer (and scheduler).

bpcore computes the loss and the gradients with its own explicit kernels
(``bp.value_and_grad``, no autograd) on PyTorch tensors; the update is
PyTorch's: each gradient is handed to its parameter's ``.grad`` and
``torch.optim.AdamW`` steps, with a cosine learning-rate schedule, as in any
torch training loop. Useful when a project already has its optimizer and
scheduler set-up in torch and wants bpcore's kernels underneath. The
parameters stay plain tensors (leaves, ``requires_grad=False``): the
optimizer updates them in place, so the ``params`` tree always holds the
current weights.

    python examples/torch_optim.py
    python examples/torch_optim.py --epochs 40 --lr 3e-3
"""

from __future__ import annotations

import argparse

import numpy as np

import bpcore as bp


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3, help="AdamW's peak learning rate")
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import torch

    from bpcore.data import load_dataset, split

    parts = split(load_dataset("digits"), val=0.0, test=0.2, seed=args.seed)  # stratified
    mean, std = parts.X_train.mean(0), parts.X_train.std(0) + 1e-8
    X_train = torch.as_tensor((parts.X_train - mean) / std, dtype=torch.float32)
    X_test = torch.as_tensor((parts.X_test - mean) / std, dtype=torch.float32)
    y_train, y_test = torch.as_tensor(parts.y_train), torch.as_tensor(parts.y_test)
    n = len(y_train)

    net = bp.mlp([64, 128, 10], "relu")
    with bp.use_backend("torch"):
        params = net.init(args.seed)  # a tuple of {"W", "b"} dicts of torch tensors
    leaves = bp.tree.arrays(params)
    opt = torch.optim.AdamW(leaves, lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = -(-n // args.batch)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.epochs * steps_per_epoch)

    rng = np.random.default_rng(args.seed)
    for epoch in range(1, args.epochs + 1):
        order = torch.as_tensor(rng.permutation(n))
        total = 0.0
        for start in range(0, len(order), args.batch):
            rows = order[start:start + args.batch]
            value, grads = bp.value_and_grad(net, "softmax_cross_entropy", params,
                                             X_train[rows], y_train[rows])
            for p, g in zip(leaves, bp.tree.arrays(grads)):  # same order: same tree
                p.grad = g
            opt.step()
            schedule.step()
            total += float(value) * len(rows)
        if epoch == 1 or epoch % 5 == 0 or epoch == args.epochs:
            print(f"epoch {epoch:3d}  loss {total / n:.4f}  "
                  f"lr {schedule.get_last_lr()[0]:.2e}")
    logits = bp.predict(net, params, X_test)
    accuracy = float((logits.argmax(1) == y_test).float().mean())
    print(f"test accuracy {100 * accuracy:.1f}%")


if __name__ == "__main__":
    main()
