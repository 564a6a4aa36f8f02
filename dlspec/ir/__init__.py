"""The intermediate representation: typed tensors, a graph of op nodes, and training configs."""
