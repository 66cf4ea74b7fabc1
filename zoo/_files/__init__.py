"""Files that are never half-written (fsio) and JSON that cannot hang or exhaust the reader (jsonio)."""
