"""Hot mesh and texture ops: one module per op, its numpy reference beside it."""
