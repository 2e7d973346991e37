"""CPU training step with channels-last memory format against the default (contiguous) one.

The ``mri`` task's CPU configs set ``channels_last: true`` (:class:`training.loop.Trainer`
then converts the model and every 4-D input). This measures one optimisation step (forward,
BCE + Dice loss, backward, Adam step) of the FLAIR MRI recipe's U-Nets on a batch of 256 x 256 x 3
slices, both formats interleaved in the same run (the reference is the default format), and
checks that the two give the same loss and gradients (float32 arithmetic in both).
``--write`` puts the table in docs/benchmarks.md ("CPU training: channels-last").
"""

from __future__ import annotations

import argparse
import copy
import datetime
import time

import torch

from napari_neuroseg.models.unet import UNet
from training.losses import make_loss

try:
    from benchmarks._doc import DOC, Row, write_section
except ImportError:  # run as a script from benchmarks/
    from _doc import DOC, Row, write_section

HEADING = "## CPU training: channels-last"
NETWORKS = {
    "5-floor U-Net, width 8 (mri-flair-unet as shipped)": dict(depth=5, base_features=8),
    "4-floor triple-conv U-Net, width 8": dict(depth=4, base_features=8,
                                               deep_convs=(2, 2, 3, 3)),
    "5-floor U-Net, width 32 (the write-up's)": dict(depth=5, base_features=32),
}


def _step(model, optimizer, loss_fn, x, y, channels_last: bool) -> float:
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    started = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - started


def measure(kwargs: dict, batch: int, repeats: int) -> dict[str, float]:
    """Median step seconds of both formats and the largest loss / gradient difference."""
    torch.manual_seed(0)
    base = UNet(3, 1, **kwargs)
    loss_fn = make_loss("ce+dice")
    x = torch.randn(batch, 3, 256, 256)
    y = (torch.rand(batch, 256, 256) > 0.97).long()
    models = {False: copy.deepcopy(base), True: copy.deepcopy(base).to(
        memory_format=torch.channels_last)}
    # same weights, same batch: the loss and the gradients must agree
    diffs = []
    grads = {}
    for cl, model in models.items():
        xx = x.contiguous(memory_format=torch.channels_last) if cl else x
        loss = loss_fn(model(xx), y)
        loss.backward()
        grads[cl] = (float(loss.detach()),
                     torch.cat([p.grad.detach().reshape(-1) for p in model.parameters()]))
        model.zero_grad(set_to_none=True)
    diffs.append(abs(grads[False][0] - grads[True][0]))
    # all gradients as one vector (a per-tensor ratio blows up on the near-zero gradients of
    # the conv biases that BatchNorm cancels)
    grad_diff = float((grads[False][1] - grads[True][1]).norm() / grads[False][1].norm())
    optimizers = {cl: torch.optim.Adam(m.parameters(), 1e-3) for cl, m in models.items()}
    times = {False: [], True: []}
    for r in range(repeats + 1):  # first round warms up
        for cl in (False, True) if r % 2 == 0 else (True, False):
            seconds = _step(models[cl], optimizers[cl], loss_fn, x, y, cl)
            if r:
                times[cl].append(seconds)
    median = {cl: sorted(t)[len(t) // 2] for cl, t in times.items()}
    return {"default": median[False], "channels_last": median[True],
            "loss_diff": diffs[0], "grad_rel_diff": grad_diff}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args(argv)
    rows = []
    for what, kwargs in NETWORKS.items():
        m = measure(kwargs, args.batch, args.repeats)
        ratio = m["default"] / m["channels_last"]
        rows.append(Row("a", f"{what}: step, default / channels-last",
                        f"{m['default'] * 1e3:.0f} ms / {m['channels_last'] * 1e3:.0f} ms: "
                        f"{ratio:.2f}x faster", "",
                        f"batch {args.batch}, 256 px, median of {args.repeats}, interleaved; "
                        f"loss differs by {m['loss_diff']:.1e}, gradients by "
                        f"{m['grad_rel_diff']:.1e} (relative norm)"))
        print(rows[-1], flush=True)
    if args.write:
        lines = [HEADING, "",
                 f"Measured with `python benchmarks/bench_channels_last.py --write` on "
                 f"{datetime.date.today()} ({torch.get_num_threads()} threads; other jobs "
                 "were running, so read the ratios, not the times).", "",
                 "| id | measurement | result | goal | notes |", "|---|---|---|---|---|"]
        lines += [f"| {r.id} | {r.what} | {r.result} | {r.goal} | {r.notes} |" for r in rows]
        write_section(DOC, HEADING, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
