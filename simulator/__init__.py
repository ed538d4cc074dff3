"""energylake: see DESIGN.md for what this package does."""
