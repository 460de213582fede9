"""Tests of the command-line layer: exit codes, one-line errors, --json output."""
