import numpy as np
import pytest

from charrnn.corpus.encode import encode_text
from charrnn.corpus.text import load_corpus
from charrnn.errors import InputError
from charrnn.model.vocab import Vocab, id_dtype, one_hot


def write(tmp_path, data: bytes, name="t.txt"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def read_text(path, encoding="utf-8", chunk_bytes=7):
    """The text load_corpus sees, decoded back from its ids (small chunks cross characters)."""
    vocab, ids = load_corpus(path, encoding, chunk_bytes=chunk_bytes)
    return vocab.decode(ids)


def test_ascii_file_encodes_like_its_str(tmp_path):
    raw = b"To be, or not to be\nthat is the question\r\n"
    vocab, ids = load_corpus(write(tmp_path, raw), chunk_bytes=5)
    vocab_s, ids_s = encode_text(raw.decode())
    assert vocab == vocab_s
    np.testing.assert_array_equal(ids, ids_s)
    assert vocab.decode(ids) == raw.decode()
    assert encode_text(raw)[0] == vocab


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 1 << 20])
def test_chunked_decoding_gives_the_whole_text(tmp_path, chunk_bytes):
    text = "\u65e5\u672c caf\u00e9 \U0001f600 \u2014 end\n" * 5
    assert read_text(write(tmp_path, text.encode()), chunk_bytes=chunk_bytes) == text


def test_utf8_bom_is_dropped(tmp_path):
    assert read_text(write(tmp_path, "\ufeffcaf\u00e9".encode("utf-8"))) == "caf\u00e9"


def test_other_encodings_on_request(tmp_path):
    path = write(tmp_path, "na\u00efve".encode("latin-1"))
    assert read_text(path, "latin-1") == "na\u00efve"
    assert read_text(write(tmp_path, "h\u00e9".encode("utf-16"), "u16.txt"), "utf-16") == "h\u00e9"


def test_undecodable_byte_names_offset_and_suggests_encoding(tmp_path):
    path = write(tmp_path, "\u00e9t\u00e9 abc".encode() + b"\xffdef")
    with pytest.raises(InputError, match=r"0xff at offset 9.*--encoding"):
        read_text(path, chunk_bytes=4)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty"),
        (b"abc\x00\x01def", "binary"),
        ("caf\u00e9\x00".encode(), "binary"),
    ],
)
def test_unusable_files_are_refused(tmp_path, data, message):
    with pytest.raises(InputError, match=message):
        read_text(write(tmp_path, data))


def test_missing_file_directory_and_unknown_encoding(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_text(tmp_path / "absent.txt")
    with pytest.raises(InputError, match="directory"):
        read_text(tmp_path)
    with pytest.raises(InputError, match="unknown encoding"):
        read_text(write(tmp_path, b"abc"), "no-such-codec")


def test_vocab_is_sorted_by_code_point_and_round_trips_unicode():
    text = "\u65e5\u672c\u8a9e \U0001f600 caf\u00e9 \u0416\u0436 abc"
    vocab, ids = encode_text(text)
    assert list(vocab.chars) == sorted(set(text))
    assert vocab.decode(ids) == text
    assert ids.dtype == np.uint8


def test_thousands_of_characters_use_a_wider_id_type(monkeypatch):
    import charrnn.corpus.encode

    monkeypatch.setattr(charrnn.corpus.encode, "_CHUNK", 1000)  # exercise the slice-by-slice path
    text = "".join(chr(c) for c in range(0x4E00, 0x4E00 + 3000)) * 2 + "\U0001f600"
    vocab, ids = encode_text(text)
    assert len(vocab) == 3001
    assert ids.dtype == np.uint16
    assert vocab.decode(ids) == text


def test_id_dtype_is_the_smallest_that_fits():
    assert id_dtype(256) == np.uint8
    assert id_dtype(257) == np.uint16
    assert id_dtype(65536) == np.uint16
    assert id_dtype(65537) == np.uint32


def test_encode_names_unknown_characters():
    vocab = Vocab(("a", "b"))
    np.testing.assert_array_equal(vocab.encode("abba"), [0, 1, 1, 0])
    with pytest.raises(InputError, match="'z'"):
        vocab.encode("abz")


def test_vocab_rejects_unsorted_or_repeated_characters():
    with pytest.raises(ValueError):
        Vocab(("b", "a"))
    with pytest.raises(ValueError):
        Vocab(("a", "a"))


def test_index_into_U_equals_one_hot_product():
    rng = np.random.default_rng(0)
    U = rng.normal(size=(7, 5))
    ids = rng.integers(0, 7, size=(3, 4))
    x = one_hot(ids, 7, np.float64)  # (3, 4, 7)
    assert x.sum(axis=-1).tolist() == [[1.0] * 4] * 3
    np.testing.assert_array_equal(x @ U, U[ids])


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 5, 64])
def test_utf8_sequences_split_across_chunks_decode_whole(tmp_path, chunk_bytes):
    text = "a\u00e9\u20ac\U0001f600b" * 7 + "\u00e9"  # 1-, 2-, 3- and 4-byte sequences
    assert read_text(write(tmp_path, text.encode()), chunk_bytes=chunk_bytes) == text


@pytest.mark.parametrize(
    "data, offset",
    [
        (b"ab\xc3", 2),  # the file ends inside a sequence
        (b"abcdef\xc3(", 6),  # a lead byte without its continuation
        (b"\xed\xa0\x80abc", 0),  # an encoded surrogate
    ],
)
def test_invalid_utf8_is_reported_at_its_offset(tmp_path, data, offset):
    with pytest.raises(InputError, match=f"at offset {offset} "):
        read_text(write(tmp_path, data), chunk_bytes=4)


def test_cp1252_text(tmp_path):
    text = "\u201cQuoted\u201d \u2014 caf\u00e9"
    assert read_text(write(tmp_path, text.encode("cp1252")), "cp1252") == text
