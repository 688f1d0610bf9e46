"""The `egtlm` command."""
