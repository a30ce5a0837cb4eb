"""Staff actions through the CLI and the pages (test client and browser)."""
