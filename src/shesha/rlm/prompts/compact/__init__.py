"""Shorter prompts for small local models (a 1.5B model reads about 75 tokens a second)."""
