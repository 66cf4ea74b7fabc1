"""The Hugging Face Hub: a repo fetched into a local snapshot folder, a folder uploaded to a repo."""
