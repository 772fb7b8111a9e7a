"""Helpers shared by the tests: toy kernels and process inspection."""
