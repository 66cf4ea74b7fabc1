"""Hub addresses, "hf://org/name@revision": told apart here, once, without importing huggingface_hub."""

URI_SCHEME = "hf://"


def is_hub_address(source: object) -> bool:
    """Whether `source` names a Hub repo ("hf://org/name" or "hf://org/name@revision")."""
    return isinstance(source, str) and source.startswith(URI_SCHEME)
