"""Skills: each answers one kind of question (identify, read, …) with a confidence."""
