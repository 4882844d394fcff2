import signal

import numpy as np
import pytest

# Several tests press Ctrl-C in a command they start (SIGINT to a subprocess). A shell that starts
# pytest in the background (`pytest &` in a script, as a CI runner may) starts it with SIGINT
# ignored, and an ignored signal stays ignored across exec: the commands would never see Ctrl-C.
# A handled signal is reset to the default on exec, so handling it here gives them the default.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def make_text(n_chars: int = 6000, seed: int = 0) -> str:
    """A small text with learnable structure: words from a tiny lexicon, sentences, line breaks."""
    rng = np.random.default_rng(seed)
    words = ["the", "king", "queen", "shall", "speak", "of", "love", "and", "war", "to", "thee", "my", "lord"]
    out, length = [], 0
    while length < n_chars:
        sentence = " ".join(rng.choice(words, size=rng.integers(3, 9))).capitalize() + ".\n"
        out.append(sentence)
        length += len(sentence)
    return "".join(out)[:n_chars]


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(make_text())
    return path
