"""Tensors to and from safetensors files, and stored tensors fitted onto a model. Local files only.

layout    the format as zoo writes it: file names, metadata keys, dtype codes, 64-byte alignment
reader    files and folders opened, every header checked, tensors memory-mapped (StoredTensors)
writer    files and shard folders written one tensor at a time, tied tensors stored once
fit       stored tensors held against a model (keys, shapes, dtypes, ties), then loaded all or nothing
nested    zoo.save_tensors / zoo.load_tensors: any nesting of dicts, lists and tuples of tensors
progress  bars for large transfers, and none where nobody watches
"""
