"""The RLM engine: the loop, sub-calls, budgets and traces."""
