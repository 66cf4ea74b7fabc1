"""The resolved tree → an nn.Module, through the lazy lifecycle; no file I/O here.

builder    constructs the resolved tree (Sequential chains, fx graphs for dataflow blocks)
graph      a dataflow block → torch.fx GraphModule
initrules  `init` rules: now, or deferred until a lazy layer has its shape
devices    devices and dtypes by name, placement of a whole model, sizes in bytes
lazy       the lazy lifecycle: what is lazy, place, materialise by a shape pass on meta
check      `zoo check`: resolve, then run the declared input through a meta build
"""
