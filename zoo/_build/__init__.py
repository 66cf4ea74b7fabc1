"""The resolved tree → an nn.Module, through the lazy lifecycle; no file I/O here.

builder       constructs the resolved tree (Sequential chains, fx graphs for dataflow blocks)
graph         a dataflow block → torch.fx GraphModule
initrules     `init` rules: now, or deferred until a lazy layer has its shape
devices       devices and dtypes by name, placement of a whole model, sizes in bytes
lazy          the lazy lifecycle stated once; what is lazy; place a model keeping lazy tensors lazy
shape_pass    a twin of the model run on meta (or for real, as a fallback): first calls, output shapes
materialize   zoo.materialize: lazy layers sized by a shape pass and initialised as torch would
known_shapes  lazy layers sized from a checkpoint's shapes, no forward pass (and register_input_rule)
meta          builds on meta that draw no initial values, for tensors a load replaces
check         `zoo check`: resolve, then run the declared input through a meta build
"""
