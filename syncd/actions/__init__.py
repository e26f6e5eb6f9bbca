"""One module per CLI command: turn parsed arguments into an engine call and print the result."""
