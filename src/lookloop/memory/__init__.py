"""The wearer's memories ("remember this is where I parked") and conversation notes, in their own tables."""
