"""Recording replayers and writers, one module per format, plus the project's own sample recordings."""
