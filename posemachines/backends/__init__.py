"""The built-in backends, a package each: mean, forest, cnn, people (and the stacks that mix
them). They are listed in ``posemachines.registry.BUILT_IN``; importing this package registers
nothing."""
