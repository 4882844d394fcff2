import numpy as np
import pytest


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
