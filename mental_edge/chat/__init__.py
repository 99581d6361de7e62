"""The terminal chat session: the session loop, what the user types, the care message, and conversations
laid out through the model's template or its family's layout."""
