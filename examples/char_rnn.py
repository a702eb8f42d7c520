"""Train a character-level language model with rnncore, as in the classic char-rnn.

    python examples/char_rnn.py                      # 2000 steps, ~15 s on 2 cores
    python examples/char_rnn.py --cell lstm          # an LSTM (or --cell gru) instead
    python examples/char_rnn.py --steps 2000 --hidden 256 --checkpoint model.npz
    python examples/char_rnn.py --resume model.npz --steps 0 --sample 400

Reads a text (default: Shakespeare's Coriolanus, public domain, in examples/data),
trains an RNNModel (embedding -> tanh RNN, LSTM or GRU -> softmax over characters) with
truncated BPTT over a batch of parallel streams of the text (the state, an LSTM's (h, c)
pair, carried from chunk to chunk), Adam and gradient-norm clipping,
shows the running loss (a tqdm progress bar when tqdm is installed, printed lines
otherwise), prints samples as it goes, and saves a checkpoint (.npz) that --resume
loads. The matrices here are small, so BLAS runs on one thread unless
OPENBLAS_NUM_THREADS says otherwise.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

# Small matrices: BLAS threads cost more than they save (set before NumPy loads).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import rnncore  # noqa: E402
from rnncore.optim import Adam, truncated_bptt  # noqa: E402

DATA = pathlib.Path(__file__).with_name("data") / "coriolanus.txt"


def encode(text: str):
    """Character ids of the text, and the sorted characters (id -> character)."""
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    return np.array([index[c] for c in text], dtype=np.int64), chars


def streams(ids: np.ndarray, batch: int):
    """Cut the text into `batch` parallel streams, shape (T, batch), for stateful TBPTT."""
    T = (len(ids) - 1) // batch
    inputs = ids[:T * batch].reshape(batch, T).T
    targets = ids[1:T * batch + 1].reshape(batch, T).T
    return inputs, targets


def sample(model: rnncore.RNNModel, chars, start: str, length: int, rng, temperature=0.8):
    """Generate `length` characters after `start`, one step at a time.

    The state h is whatever the model's forward returns: an array, or an LSTM's (h, c).
    """
    h = None
    ids = [chars.index(c) for c in start if c in chars] or [0]
    out = list(start)
    for i in ids[:-1]:                                  # read the prompt
        _, h = model.forward(np.array([[i]]), h0=h)
    token = ids[-1]
    for _ in range(length):
        logits, h = model.forward(np.array([[token]]), h0=h)
        z = logits[0, 0].astype(np.float64) / temperature
        p = np.exp(z - z.max())
        token = int(rng.choice(len(chars), p=p / p.sum()))
        out.append(chars[token])
    return "".join(out)


def progress(total):
    """A tqdm progress bar, or None when tqdm is not installed."""
    try:
        from tqdm import tqdm
        return tqdm(total=total, unit="step", dynamic_ncols=True)
    except ImportError:
        return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--text", type=pathlib.Path, default=DATA, help="training text (UTF-8)")
    parser.add_argument("--steps", type=int, default=2000,
                        help="optimiser steps, one per chunk of --chunk characters (default 2000)")
    parser.add_argument("--cell", choices=rnncore.functional.CELLS, default=None,
                        help="the recurrence: rnn (tanh Elman RNN, the default), lstm or "
                        "gru; a resumed checkpoint keeps its own")
    parser.add_argument("--hidden", type=int, default=128, help="hidden size (default 128)")
    parser.add_argument("--layers", type=int, default=1, help="RNN layers (default 1)")
    parser.add_argument("--batch", type=int, default=32, help="parallel streams (default 32)")
    parser.add_argument("--chunk", type=int, default=32, help="truncated-BPTT length (default 32)")
    parser.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    parser.add_argument("--clip", type=float, default=5.0, help="gradient-norm clip")
    parser.add_argument("--sample-every", type=int, default=500, help="print a sample every N steps")
    parser.add_argument("--sample", type=int, default=200, help="length of each sample")
    parser.add_argument("--checkpoint", type=pathlib.Path,
                        help="save the model here (an .npz, under exactly this name) at "
                        "each sample and at the end; an interrupted save keeps the "
                        "previous checkpoint")
    parser.add_argument("--resume", type=pathlib.Path, help="load a checkpoint first")
    parser.add_argument("--backend", choices=rnncore.backends(), default=None,
                        help="rnncore backend (default: the fastest available)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initialisation "
                        "and of the sampling")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or samples")
    args = parser.parse_args(argv)

    text = args.text.read_text(encoding="utf-8")
    ids, chars = encode(text)
    rng = np.random.default_rng(args.seed)
    if args.resume:
        model = rnncore.RNNModel.load(args.resume, backend=args.backend)
        if model.vocab_size != len(chars):
            parser.error(f"{args.resume} was trained on {model.vocab_size} characters; "
                         f"this text has {len(chars)}")
        if args.cell is not None and args.cell != model.cell:
            parser.error(f"{args.resume} holds a model with cell={model.cell!r}; got "
                         f"--cell {args.cell}")
    else:
        model = rnncore.RNNModel(len(chars), args.hidden, vocab_size=len(chars),
                                 cell=args.cell or "rnn", num_layers=args.layers,
                                 seed=args.seed, backend=args.backend)
    optimizer = Adam(model.params, lr=args.lr)
    inputs, targets = streams(ids, args.batch)
    print(f"{len(text)} characters, {len(chars)} distinct; {model!r}", file=sys.stderr)

    bar = None if args.quiet else progress(args.steps)
    step, running, t0, history = 0, None, time.perf_counter(), []
    while step < args.steps:
        offset = int(rng.integers(0, args.chunk))      # a new cut of the text each pass
        for loss, _ in truncated_bptt(model, inputs[offset:], targets[offset:], args.chunk,
                                      optimizer, clip_norm=args.clip):
            step += 1
            running = loss if running is None else 0.95 * running + 0.05 * loss
            history.append(loss)
            if bar is not None:
                bar.set_postfix(loss=f"{running:.3f}")
                bar.update(1)
            elif not args.quiet and step % 25 == 0:
                print(f"step {step}: loss {running:.3f}", file=sys.stderr)
            if not args.quiet and args.sample_every and step % args.sample_every == 0:
                text_out = sample(model, chars, "\n", args.sample, rng)
                (bar.write if bar is not None else print)(
                    f"--- step {step}, loss {running:.3f}\n{text_out}\n---")
                if args.checkpoint:
                    model.save(args.checkpoint)
            if step >= args.steps:
                break
    if bar is not None:
        bar.close()
    if history:
        k = min(20, len(history))
        print(f"loss: first {k} steps {np.mean(history[:k]):.3f}, last {k} steps "
              f"{np.mean(history[-k:]):.3f} ({step} steps, {time.perf_counter() - t0:.1f} s)")
    if args.checkpoint:
        model.save(args.checkpoint)
        print(f"saved {args.checkpoint}", file=sys.stderr)
    if args.steps == 0 and args.sample:
        print(sample(model, chars, "\n", args.sample, rng))
    return 0


if __name__ == "__main__":
    sys.exit(main())
