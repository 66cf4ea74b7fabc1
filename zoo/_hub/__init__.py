"""The Hugging Face Hub: a repo fetched into a local snapshot folder, a folder uploaded to a repo.

address  "hf://org/name@revision" told apart, without importing huggingface_hub
client   the only module that imports huggingface_hub: fetch, upload, the cache, the client's errors
"""
