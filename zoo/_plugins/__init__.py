"""Where names come from: pluggy entry points (group `zoo`), zoo's own default plugin among them.

hookspecs   the plugin contract: one stub per hook
discovery   finds, loads and isolates plugins; fills the registry on first use
builtin     zoo's default plugin: torch.nn's layers, the seed's blocks, ops, init functions, registry.toml
blocks      the seed's custom blocks (MySequential, CenteredLayer, FixedHiddenMLP, MyLinear, LazyMyLinear)
ops         the closed set of tensor functions a declaration's `op` may name
"""
