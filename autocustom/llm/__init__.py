"""Chat backends behind one protocol, and the SQLite cache that makes every run resumable."""
