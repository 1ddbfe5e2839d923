"""Program rules: published, versioned, and readable by anyone."""
