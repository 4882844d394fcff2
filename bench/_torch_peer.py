"""The PyTorch peer of bench_train.py, run in its own process (so its thread pools and BLAS never
share a process with ours). Prints one JSON object.

    python bench/_torch_peer.py --cell rnn|gru|lstm --layers 1 --hidden 512 --batch 32 --seq 64 \
        --vocab 65 --threads 2 --windows 3 --window-seconds 5 --mode train|infer

The model is the usual PyTorch char-RNN script: nn.Embedding (the one-hot input), nn.RNN(tanh),
nn.GRU or nn.LSTM with `--layers` layers, nn.Linear output, cross-entropy, Adam, clip_grad_norm_,
state carried (detached).
"""

import argparse
import json

import numpy as np
import torch
from _timing import windows_rate  # bench/ is on sys.path when run as a script
from torch import nn


class CharRNN(nn.Module):
    def __init__(self, cell, layers, vocab, hidden):
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        if cell == "rnn":
            self.rnn = nn.RNN(hidden, hidden, layers, nonlinearity="tanh", batch_first=True)
        else:
            self.rnn = {"gru": nn.GRU, "lstm": nn.LSTM}[cell](hidden, hidden, layers, batch_first=True)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, x, h):
        y, h = self.rnn(self.embed(x), h)
        return self.out(y), h


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cell", choices=("rnn", "gru", "lstm"), default="rnn")
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--hidden", type=int, required=True)
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--seq", type=int, required=True)
    ap.add_argument("--vocab", type=int, default=65)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--windows", type=int, default=3)
    ap.add_argument("--window-seconds", type=float, default=5.0)
    ap.add_argument("--mode", choices=("train", "infer"), default="train")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    B, T, V, H = args.batch, args.seq, args.vocab, args.hidden
    batches = [
        (torch.from_numpy(rng.integers(0, V, (B, T))), torch.from_numpy(rng.integers(0, V, (B, T)))) for _ in range(8)
    ]
    model = CharRNN(args.cell, args.layers, V, H)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    loss_fn = nn.CrossEntropyLoss()
    h0 = torch.zeros(args.layers, B, H)
    state = {"h": (h0, h0.clone()) if args.cell == "lstm" else h0, "i": 0}

    def train_step():
        x, y = batches[state["i"] % len(batches)]
        state["i"] += 1
        logits, h = model(x, state["h"])
        loss = loss_fn(logits.reshape(-1, V), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        state["h"] = tuple(x.detach() for x in h) if args.cell == "lstm" else h.detach()

    def infer_step():
        x, y = batches[state["i"] % len(batches)]
        state["i"] += 1
        with torch.no_grad():
            logits, h = model(x, state["h"])
            loss_fn(logits.reshape(-1, V), y.reshape(-1))
        state["h"] = h

    step = train_step if args.mode == "train" else infer_step
    for _ in range(3):  # warm-up: allocator, kernels picked
        step()
    median, rates = windows_rate(step, B * T, args.windows, args.window_seconds)
    print(
        json.dumps(
            {"torch": torch.__version__, "threads": torch.get_num_threads(), "chars_per_s": median, "windows": rates}
        )
    )


if __name__ == "__main__":
    main()
