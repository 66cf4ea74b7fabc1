"""zoo.distributed: a model of your own sharded over a torch.distributed mesh with FSDP2.

zoo.build(name, mesh=mesh) and zoo.load(path, mesh=mesh) shard what zoo builds; these are for
a model built in code:

    with torch.device("meta"):
        model = MyModel()
    zoo.distributed.shard(model, mesh)          # fully_shard on every block that owns parameters, then the model
    model.to_empty(device="cpu")                # each rank allocates only its rows
    zoo.distributed.load_into(model, "saved")   # and reads only those rows from the safetensors files
"""

from zoo._scale.fsdp import ShardPolicy, is_sharded, load_into, shard

__all__ = ["ShardPolicy", "is_sharded", "load_into", "shard"]
