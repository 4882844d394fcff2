"""Text in: reading and decoding files (text), Project Gutenberg's conventions (gutenberg), and the
public-domain corpora charrnn downloads (download)."""
