"""Research harness: seeded task generators, scoring, and an eval runner."""
