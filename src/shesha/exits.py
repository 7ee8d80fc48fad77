"""The `shesha` command's exit codes."""

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_LIMIT = 0, 1, 2, 3
"""0 answered (or done); 1 error; 2 usage; 3 a budget or iteration limit was reached."""
