"""Local models on the CPU: a registry, a fetcher and a llama.cpp server manager."""
