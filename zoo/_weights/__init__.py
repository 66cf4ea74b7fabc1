"""Tensors to and from safetensors files, and stored tensors fitted onto a model. Local files only."""
