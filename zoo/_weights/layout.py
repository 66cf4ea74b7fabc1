"""The safetensors format as zoo writes and reads it: file names, metadata keys, dtype codes, alignment.

Reading goes through safetensors itself: its parser checks every header (sizes, offsets and
dtypes agree, the data covers the file exactly) and memory-maps the data, so a loaded tensor
is a view of the page cache until someone writes to it (copy-on-write; the file never changes).

Writing streams the format (8-byte little-endian header length, JSON header, raw bytes) one
tensor at a time, so a dtype conversion or a copy off the GPU never holds more than one
tensor, and a progress bar can follow the bytes. `safetensors.torch.load_file` reads the result.
The data buffer and nearly every tensor start 64-byte aligned (`_write_order`), as torch allocates.

What zoo adds in the header's `__metadata__` (plain strings, ignored by other readers):
- `zoo.aliases`: tensors that share memory (tied weights) are stored once; this maps every
  other key to the stored one, and loading ties them again.
- `zoo.structure`: for save_tensors, the list/tuple/dict nesting around the stored tensors.

What zoo reads from other writers: huggingface_hub's `save_torch_model` (and so
`PyTorchModelHubMixin`) drops all but one name of shared tensors and records `{removed: kept}`
in the file's metadata (one file) or the index's (shards); those names become aliases as
zoo's own do. transformers and accelerate drop tied names without a record: a load accepts a
missing key when the model ties it to a key the file has, as `safetensors.torch.load_model` does.
"""

from __future__ import annotations

import torch

MODEL_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
ALIASES_KEY = "zoo.aliases"
STRUCTURE_KEY = "zoo.structure"
SAVE_ID_KEY = "zoo.save_id"  # one random id per save, in every shard: a mix of two saves is detected
SHARD_NAME = "model-{:05d}-of-{:05d}.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
ALIGNMENT = 64  # bytes: torch's CPU allocator aligns every tensor so; mapped tensors must match (see tensor())

CODES: dict[torch.dtype, str] = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
    torch.complex64: "C64",
}
for _name, _code in [
    ("float8_e4m3fn", "F8_E4M3"),
    ("float8_e5m2", "F8_E5M2"),
    ("uint16", "U16"),
    ("uint32", "U32"),
    ("uint64", "U64"),
]:  # newer torch only
    if hasattr(torch, _name):
        CODES[getattr(torch, _name)] = _code
DTYPES = {code: dtype for dtype, code in CODES.items()}
