"""A model across devices (placement: whole blocks per device) or across processes (fsdp: FSDP2 shards)."""
