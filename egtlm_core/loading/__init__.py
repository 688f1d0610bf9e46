"""Where weights come from and the one registry that shares them in a process."""
