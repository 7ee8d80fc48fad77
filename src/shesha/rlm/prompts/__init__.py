"""The engine's prompt templates (package data). See shesha.rlm.prompting."""
