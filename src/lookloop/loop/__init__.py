"""The learning loop: escalation policies, the learner, query strategies, the model registry."""
