"""The terminal chat session: the session loop, what the user types, and the care message."""
