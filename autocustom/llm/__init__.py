"""Models and the text they write: loading any model reference, the chat format, local generation, the chat backends behind one protocol, and the SQLite cache that makes every call resumable."""
