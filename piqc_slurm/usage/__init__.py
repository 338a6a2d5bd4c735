"""How a job used its GPUs and what that cost: catalog, prices, utilization, rules."""
